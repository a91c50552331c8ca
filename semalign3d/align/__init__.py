"""Test-time alignment of a class representation to one image (method.md §2.11).

Pipeline (one concern per module)::

    model = prepare_model(rep, cfg)                          # model.py: what the energy reads
    target = make_target(name, descriptors, model, cfg)      # target.py (+ foreground.py mask)
    batch = stack_targets([target, ...], model, cfg)        # p_sem tables, precomputed once
    alignments = align(batch, model, cfg)                    # optimize.py -> [Alignment]

The energy (energy.py, Eq. 13) combines reconstruction.py (Eqs. 5-9), the shape prior's
``geometric_nll``, background.py, depth_gauge.py and the optional visibility.py weights;
hypotheses.py places the initial poses; profiles.py sizes runs for CPU or GPU.
"""
