"""One module per shape family, each exposing ``FAMILY`` (registered in ``..shapes``)."""
