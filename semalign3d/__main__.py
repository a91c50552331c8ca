import sys

from semalign3d.cli import main

sys.exit(main())
