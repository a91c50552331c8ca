import pytest

from semalign3d.config import (
    AlignConfig,
    Config,
    ConfigError,
    Schedule,
    dump_yaml,
    from_dict,
    load_yaml,
    replace,
    scale_schedules,
    table5,
)


def test_schedule_breakpoints_and_midpoints_table5_sigma_dense():
    s = AlignConfig().sigma_dense  # Table 5: [0, 300, 500] -> [1.0, 0.1, 0.03]
    assert s(0) == 1.0 and s(300) == pytest.approx(0.1) and s(500) == pytest.approx(0.03)
    assert s(150) == pytest.approx(0.55)  # midpoint of 1.0 and 0.1
    assert s(400) == pytest.approx(0.065)  # midpoint of 0.1 and 0.03
    assert s(999) == pytest.approx(0.03)  # constant after the last breakpoint
    assert s(-5) == 1.0


def test_table5_other_and_bottle_schedules():
    other, bottle = table5("chair"), table5("bottle")
    assert other.w_sparse(600) == pytest.approx(5.0)  # [0,500,700,1000] -> [0,0,10,1]
    assert other.w_sparse(850) == pytest.approx(5.5)
    assert bottle.w_sparse(850) == pytest.approx(5.5)  # [0,0,1,10]: 1 + 9 * 0.5
    assert bottle.w_sparse(600) == pytest.approx(0.5)
    assert other.w_background(400) == pytest.approx(55.0)  # [1,10,100,10] at [0,300,500,700]
    assert bottle.w_background(950) == pytest.approx(10.5)  # [0,0,1,20] at [0,700,900,1000]
    assert bottle.sigma_sparse(400) == pytest.approx(0.3)
    assert other.sigma_sparse(400) == pytest.approx(0.1)
    assert other.sigma_sparse(600) == pytest.approx(0.075)
    assert other.w_geom(123) == 0.5 and other.w_depth(0) == 10.0 and other.w_dense(7) == 1.0
    assert other.lr == 5e-3 and other.n_steps == 1000


def test_table5_keeps_what_the_config_set():
    """Table 5 fills in defaults only: a value the user changed survives for every category."""
    mine = replace(AlignConfig(), sigma_sparse_inference=0.5,
                   w_background=Schedule.constant(0.0))
    for c in ("chair", "bottle", "dog"):
        cfg = table5(c, mine)
        assert cfg.sigma_sparse_inference == 0.5 and cfg.w_background(950) == 0.0
    bottle = table5("bottle", mine)
    assert bottle.w_sparse(850) == pytest.approx(5.5)  # left at the default: bottle's schedule
    assert table5("bottle", replace(AlignConfig(), lr=1e-3)).w_background(950) == \
        pytest.approx(10.5)


def test_sigma_sparse_inference_per_category():
    assert table5("chair").sigma_sparse_inference == 0.01
    assert table5("tvmonitor").sigma_sparse_inference == 0.01
    for c in ("aeroplane", "bicycle", "bottle"):
        assert table5(c).sigma_sparse_inference == 0.03
    assert table5("dog").sigma_sparse_inference == 1.0
    # a configured value is kept, the "Other" 1.0 too (it is not the unset default)
    assert AlignConfig().sigma_sparse_inference is None
    one = replace(AlignConfig(), sigma_sparse_inference=1.0)
    assert table5("bottle", one).sigma_sparse_inference == 1.0
    assert table5("chair", replace(AlignConfig(), sigma_sparse_inference=0.03)) \
        .sigma_sparse_inference == 0.03


def test_scale_schedules_keeps_shape():
    cfg = scale_schedules(AlignConfig(), 100)
    assert cfg.n_steps == 100
    assert cfg.sigma_dense(30) == pytest.approx(0.1) and cfg.sigma_dense(50) == pytest.approx(0.03)
    assert cfg.w_geom(10) == 0.5


def test_schedule_rejects_bad_input():
    with pytest.raises(ConfigError):
        Schedule((0, 10), (1.0,))
    with pytest.raises(ConfigError):
        Schedule((10, 0), (1.0, 2.0))
    with pytest.raises(ConfigError):
        Schedule((), ())


def test_strict_unknown_key_suggests_the_right_one():
    with pytest.raises(ConfigError, match="did you mean 'n_steps'"):
        from_dict(AlignConfig, {"n_step": 5})
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(Config, {"align": {"sigma_dens": 1.0}})
    with pytest.raises(ConfigError, match="expected an integer"):
        from_dict(AlignConfig, {"n_steps": "many"})
    with pytest.raises(ConfigError, match="not one of"):
        from_dict(AlignConfig, {"p_sem": "cosine"})
    with pytest.raises(ConfigError):
        replace(AlignConfig(), lrr=1.0)


def test_yaml_round_trip(tmp_path):
    cfg = Config(align=table5("bottle"))
    path = tmp_path / "c.yaml"
    path.write_text(dump_yaml(cfg))
    back = load_yaml(Config, path)
    assert back == cfg
    assert back.align.w_background(950) == pytest.approx(10.5)


def test_schedule_from_scalar_and_dict():
    sched = {"timesteps": [0, 10], "values": [1, 0]}
    cfg = from_dict(AlignConfig, {"w_geom": 2, "sigma_dense": sched})
    assert cfg.w_geom(100) == 2.0 and cfg.sigma_dense(5) == pytest.approx(0.5)


def test_keep_freed_memory_sets_the_child_environment(monkeypatch):
    import os

    from semalign3d.process import keep_freed_memory

    monkeypatch.delenv("MALLOC_TOP_PAD_", raising=False)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "123")  # a user's own value is kept
    import platform

    applied = keep_freed_memory()
    assert applied == (platform.libc_ver()[0] == "glibc")
    assert os.environ["MALLOC_TOP_PAD_"] == "100000000"
    assert os.environ["MALLOC_TRIM_THRESHOLD_"] == "123"
