"""Suite files: expansion (counts, zipped axes, ranges, derived and solved axes), skipped
combinations with their reasons, and malformed files rejected before anything runs."""

import pytest

from harness.suite import SuiteError, builtin_suites, load_suite, parse_suite


def suite(*sweeps, **top):
    return parse_suite({"sweep": list(sweeps), **top}, "t.toml")


def test_cross_product_zip_and_ranges():
    s = suite({"layer": "conv2d", "input": "{batch}x{in}x{size}x{size}",
               "params": {"out": 16, "batch": 1},
               "axes": {"in": [8, 16], "size": {"start": 8, "stop": 32, "mul": 2}},   # 8, 16, 32
               "zip": {"k": [1, 3, 5], "p": [0, 1, 2]}})
    cases = list(s.cases())
    assert s.count() == len(cases) == 2 * 3 * 3
    assert {c.inputs[0] for c in cases} == {(1, i, n, n) for i in (8, 16) for n in (8, 16, 32)}
    assert {(dict(c.config)["kernel_size"], dict(c.config)["padding"]) for c in cases} == \
        {((1, 1), (0, 0)), ((3, 3), (1, 1)), ((5, 5), (2, 2))}
    assert len({c.case_id for c in cases}) == len(cases)                  # stable, distinct ids
    assert [c.case_id for c in s.cases()] == [c.case_id for c in cases]   # deterministic
    s2 = suite({"layer": "linear", "input": "{b}x{in}", "params": {"b": 4, "out": 8},
                "axes": {"in": {"start": 16, "stop": 64, "step": 16}}})
    assert [c.inputs[0] for c in s2.cases()] == [(4, 16), (4, 32), (4, 48), (4, 64)]


def test_invalid_combinations_are_skipped_with_reasons():
    s = suite({"layer": "conv2d", "input": "1x{in}x{size}x{size}", "params": {"out": 12, "k": 7},
               "axes": {"in": [6, 8], "g": [1, 3], "size": [4, 16]}})
    cases = list(s.cases())
    assert len(cases) == 8                                                  # none dropped
    skipped = [c for c in cases if c.skip]
    # g=3 does not divide in=8 (2 sizes); a 7x7 kernel is larger than a 4x4 input for the other
    # 3 (in, g) pairs: (6, 1), (6, 3), (8, 1)
    assert sum("groups=3" in c.skip and "in_channels=8" in c.skip for c in skipped) == 2
    assert sum("kernel_size" in c.skip and "padded input" in c.skip for c in skipped) == 3
    assert len(skipped) == 5 and all(c.spec is None for c in skipped)
    ok = [c for c in cases if not c.skip]
    assert all(c.spec is not None for c in ok)


def test_equal_flops_family_by_solving_channels():
    # dense -> depthwise at c*c/g = 64*64: c = 64, 128, 256, 512 (multiples of g)
    s = suite({"layer": "conv2d", "input": "1x{c}x14x14", "params": {"k": 3, "p": 1},
               "axes": {"g": [1, 4, 16, 64]}, "derive": {"in": "c", "out": "c"},
               "solve": {"axis": "c", "keep": "c * c / g", "like": {"c": 64, "g": 1}, "multiple_of": "g"}})
    cs = [dict(c.axes)["c"] for c in s.cases()]
    assert cs == [64, 128, 256, 512]
    # channel ratio at fixed in*out: out = in * r, in solved for in*out = 128*128
    s2 = suite({"layer": "conv2d", "input": "1x{in}x14x14", "params": {"k": 1},
                "axes": {"r": [0.25, 1, 4]}, "derive": {"out": "round(in * r)"},
                "solve": {"axis": "in", "keep": "in * round(in * r)", "equal_to": 16384}})
    pairs = [(dict(c.config)["in_channels"], dict(c.config)["out_channels"]) for c in s2.cases()]
    assert pairs == [(256, 64), (128, 128), (64, 256)]


def test_memory_formats_and_dtypes():
    s = suite({"layer": "relu", "input": "2x3x4x5", "memory_format": ["nchw", "channels_last"]},
              {"layer": "relu", "input": "2x3", "memory_format": ["channels_last"], "dtypes": ["bf16"]},
              dtypes=["fp32", "fp16"])
    cases = list(s.cases())
    # the suite crosses memory format and dtype: the cases are the rows a run makes
    assert [(c.memory_format, c.dtype) for c in cases] == [
        ("nchw", "fp32"), ("nchw", "fp16"), ("channels_last", "fp32"), ("channels_last", "fp16"),
        ("channels_last", "bf16")]
    assert s.count() == 5 and s.count(["fp32"]) == 3 and len(list(s.cases(["fp32"]))) == 3
    assert cases[4].skip and "memory_format" in cases[4].skip                 # 2-d input has no channels_last
    assert len({c.case_id for c in cases}) == 5 and cases[0].config_id != cases[1].config_id


@pytest.mark.parametrize("data, key", [
    ({"sweep": [{"layer": "conv2d"}], "devcies": ["cpu"]}, "devcies"),                     # unknown top-level key
    ({"sweep": [{"layer": "conv9d"}]}, "sweep[0].layer"),                                   # unknown layer
    ({"sweep": [{"layer": "relu"}], "dtypes": ["fp8"]}, "dtypes"),                          # unknown dtype
    ({"sweep": [{"layer": "relu"}], "budget_s": "fast"}, "budget_s"),                       # wrong type
    ({"sweep": [{"layer": "relu", "axez": {}}]}, "sweep[0].axez"),
    ({"sweep": [{"layer": "conv2d", "axes": {"kernal": [3]}}]}, "sweep[0].axes.kernal"),   # typo: loud
    ({"sweep": [{"layer": "relu", "input": "{b}x{c}", "params": {"b": 1}}]}, "sweep[0].input"),
    ({"sweep": [{"layer": "relu", "zip": {"a": [1, 2], "b": [1]}, "input": "{a}x{b}"}]}, "sweep[0].zip"),
    ({"sweep": [{"layer": "relu", "axes": {"a": {"start": 4, "stop": 1, "step": 1}}, "input": "{a}"}]},
     "sweep[0].axes.a"),
    ({"sweep": [{"layer": "relu", "derive": {"a": "__import__('os')"}, "input": "{a}"}]}, "sweep[0].derive.a"),
    ({"sweep": [{"layer": "relu", "memory_format": ["nhwc"]}]}, "sweep[0].memory_format"),
    ({"sweep": []}, "sweep"),
    ({"sweep": [{"layer": "relu"}], "devices": ["tpu"]}, "devices"),
])
def test_malformed_suites_name_file_and_key(data, key):
    with pytest.raises(SuiteError) as e:
        parse_suite(data, "suites/bad.toml")
    assert e.value.key == key and str(e.value).startswith("suites/bad.toml: " + key)


def test_toml_syntax_error_names_the_line(tmp_path):
    p = tmp_path / "broken.toml"
    p.write_text('name = "x"\n[[sweep]]\nlayer = conv2d\n')
    with pytest.raises(SuiteError, match=r"broken.toml: toml=.*line 3"):
        load_suite(p)
    with pytest.raises(SuiteError, match="built-in suites: .*quick"):
        load_suite("no-such-suite")


def test_builtin_suites_load_and_expand():
    names = builtin_suites()
    assert "quick" in names
    for name in names:
        s = load_suite(name)
        cases = list(s.cases())
        assert len(cases) == s.count() > 0
        assert len({c.case_id for c in cases}) == len(cases), name


def test_expansion_is_streamed_and_counted_without_expanding():
    s = suite({"layer": "linear", "input": "{b}x{in}", "axes": {"b": list(range(1, 101)),
               "in": list(range(1, 101)), "out": list(range(1, 101))}})
    assert s.count() == 1_000_000                        # arithmetic, nothing built
    cases = s.cases()
    first = [next(cases) for _ in range(3)]              # a generator: the first cases come at once
    assert [c.inputs for c in first] == [((1, 1),)] * 3 and [dict(c.config)["out_features"] for c in first] == [1, 2, 3]


# --- every declared field: a wrong type, a wrong value, and its boundary (accepted, then refused just past) ---

from harness.suite import OMP_WAIT, SOLVE_KEYS, SWEEP_KEYS, TOP_KEYS  # noqa: E402
from harness.suite.load import RANGE_KEYS  # noqa: E402

RELU = {"layer": "relu", "input": "2x3"}
#: key -> (wrong type, wrong value, accepted at the edge, refused just past it)
TOP_CASES = {
    "name": (5, "../x", "a" * 64, "a" * 65),
    "description": (5, "bell\x07", "d" * 2000, "d" * 2001),
    "devices": ("cpu", ["tpu"], ["cpu", "cuda"], ["cpu", "cuda", "cpu"]),
    "dtypes": ("fp32", ["fp8"], ["fp32", "bf16", "fp16", "fp64"], ["fp32", "fp32"]),
    "mode": (1, "warm", "graph", "Graph"),
    "budget_s": ("1", float("inf"), 0.001, 0.000999),
    "target_rel_ci": (True, float("nan"), 1, 1.000001),
    "warmup_s": ("0", -1, 60, 60.000001),
    "min_reps": (1.5, 0, 100_000, 100_001),
    "threads": ("2", -2, 4096, 4097),
    "processes": (2.0, 0, 64, 65),
    "omp_wait": (True, "spin", "passive", "PASSIVE"),
    "memory_format": ("nchw", ["nhwc"], ["nchw", "channels_last"], []),
    "passes": ("backward", ["sideways"], ["forward", "backward", "forward+backward"], ["forward", "forward"]),
    "sweep": ({"layer": "relu"}, [], [RELU] * 1000, [RELU] * 1001),
}
SWEEP_CASES = {
    "family": (5, "a\x00b", "f" * 2000, "f" * 2001),
    "layer": (5, "conv9d", "RELU", "relu "),
    "input": (5, "{b.__class__}x3", ["{b}x3"] * 16, ["{b}x3"] * 17),
    "memory_format": ("nchw", ["nhwc"], ["channels_last"], []),
    "dtypes": ("fp32", ["fp8"], ["bf16"], []),
    "passes": ("backward", ["sideways"], ["forward+backward", "backward", "forward"], ["backward", "backward"]),
    "grads": ("input", ["bias"], ["input"], ["input", "input"]),
    "params": ([1], {"b": float("inf")}, {"b": 2**53}, {"b": 2**53 + 1}),
    "axes": ([1], {"b": []}, {"b": list(range(1, 10_001))}, {"b": list(range(1, 10_002))}),
    "zip": ([1], {"b": [1, 1]}, {"b": list(range(1, 10_001))}, {"b": list(range(1, 10_002))}),
    "derive": ("b", {"b": "'x' * 10**10"}, {"b": "2" + " " * 499}, {"b": "2" + " " * 500}),
    "solve": ("b", {"axis": "b"}, {"axis": "b", "keep": "b", "equal_to": 4, "max": 2**31},
              {"axis": "b", "keep": "b", "equal_to": 4, "max": 2**31 + 1}),
}
SOLVE = {"axis": "b", "keep": "b * g", "equal_to": 64}
SOLVE_CASES = {
    "axis": (5, "q", "b", "g"),                   # g is an axis already: defined twice
    "keep": (5, "b * 'x'", "b*g" + " " * 497, "b*g" + " " * 498),
    "equal_to": ("64", float("inf"), 2**53, 2**53 + 1),
    "like": (5, {"g": "x"}, {"g": 1, "b": 2**53}, {"g": 1, "b": 2**53 + 1}),
    "multiple_of": (1.5, 0, 2**31, 2**31 + 1),
    "max": ("5", 0, 2**31, 2**31 + 1),
}
RANGE_CASES = {
    "start": ("1", 0, 1, None),                    # mul range: start > 0
    "stop": (2.5, -1, 10_000, 10_001),             # at most 10,000 values
    "step": (True, 0, 1, None),
    "mul": ("2", 1, 2, None),
}


def test_every_declared_key_has_cases():
    assert set(TOP_CASES) == set(TOP_KEYS)
    assert set(SWEEP_CASES) == set(SWEEP_KEYS)
    assert set(SOLVE_CASES) == set(SOLVE_KEYS)
    assert set(RANGE_CASES) == set(RANGE_KEYS)


def _data(table, key, value):
    """A suite with ``value`` at ``key`` of ``table`` (top, sweep, solve or range)."""
    sweep = {"layer": "relu", "input": "2x{b}", "axes": {"b": [1, 2]}}
    if table == "top":
        return {"sweep": [RELU], key: value} if key != "sweep" else {"sweep": value}
    if table == "sweep":
        sweep = {"layer": "relu", "input": "2x{b}", key: value} if key in ("params", "axes", "zip", "derive", "solve") \
            else dict(sweep, **{key: value})
        if key == "grads":
            sweep["passes"] = ["backward"]
        if key == "input":
            sweep = {"layer": "relu", "input": value, "params": {"b": 2}}
        return {"sweep": [sweep]}
    if table == "solve":
        solve = dict(SOLVE, **{key: value})
        if key == "like":
            del solve["equal_to"]
        return {"sweep": [{"layer": "relu", "input": "{g}x{b}", "axes": {"g": [1, 2]}, "solve": solve}]}
    rng = {"start": 1, "stop": 8, "mul": 2} if key in ("mul", "start") else {"start": 1, "stop": 8, "step": 1}
    return {"sweep": [{"layer": "relu", "input": "2x{b}", "axes": {"b": dict(rng, **{key: value})}}]}


def _where(table, key):
    return {"top": key, "sweep": f"sweep[0].{key}", "solve": "sweep[0].solve", "range": "sweep[0].axes.b"}[table]


CASES = [(t, k, i) for t, cases in (("top", TOP_CASES), ("sweep", SWEEP_CASES), ("solve", SOLVE_CASES),
                                    ("range", RANGE_CASES)) for k, v in cases.items() for i in range(4)
         if v[i] is not None]


@pytest.mark.parametrize("table, key, which", CASES,
                         ids=[f"{t}.{k}-{('type', 'value', 'edge', 'past')[i]}" for t, k, i in CASES])
def test_every_field_wrong_type_wrong_value_and_boundary(table, key, which):
    cases = {"top": TOP_CASES, "sweep": SWEEP_CASES, "solve": SOLVE_CASES, "range": RANGE_CASES}[table]
    data = _data(table, key, cases[key][which])
    if which == 2:
        s = parse_suite(data, "t.toml")                             # accepted at the edge
        assert s.count() >= 1
        if table == "top" and key in ("processes", "omp_wait"):
            assert getattr(s, key) == cases[key][2]
        return
    with pytest.raises(SuiteError) as e:
        parse_suite(data, "t.toml")
    assert e.value.key.startswith(_where(table, key)), (e.value.key, str(e.value))
    assert str(e.value).startswith(f"t.toml: {e.value.key}=") and "expected" in str(e.value)
    assert "\n" not in str(e.value) and len(str(e.value)) < 1000


def test_processes_and_omp_wait_defaults():
    s = suite(RELU)
    assert s.processes is None and s.omp_wait is None
    assert suite(RELU, processes=4, omp_wait="active").processes == 4 and OMP_WAIT == ("active", "passive")


def test_distinct_invalid_points_are_distinct_cases():
    # two points whose formula fails have the same (empty) config: their axes tell them apart
    s = suite({"layer": "relu", "input": "2x{c}", "params": {"b": 2}, "axes": {"e": [54, 100000]},
               "derive": {"c": "b ** e"}})
    cases = list(s.cases())
    assert [c.skip is not None for c in cases] == [True, True]
    assert "2 ** 54 exceeds 2**53" in cases[0].skip and "exponent of at most 64" in cases[1].skip
    assert cases[0].case_id != cases[1].case_id


# --- passes and gradients ---------------------------------------------------------------------------------

CONV = {"family": "c", "layer": "conv2d", "input": "1x8x10x10", "params": {"in": 8, "out": 8, "k": 3}}


def test_forward_case_ids_stay_as_they_were():
    # the id this conv had before suites knew passes (computed by the store's ids over family + config)
    assert [c.case_id for c in suite(dict(CONV, family="conv2d")).cases()] == ["83a89d4eaf34829a"]
    both = list(suite(dict(CONV, family="conv2d", passes=["forward", "backward"])).cases())
    assert both[0].case_id == "83a89d4eaf34829a" and both[0].pass_ == "forward" and both[0].grads is None
    assert both[0].grads_text() is None


def test_backward_cases_are_distinct_by_pass_and_grads():
    s = suite(dict(CONV, passes=["forward", "backward", "forward+backward"]),
              dict(CONV, passes=["backward"], grads=["weight"]), dict(CONV, passes=["backward"], grads=["input"]),
              dict(CONV, passes=["backward"], grads=["weight", "input"]))
    cases = list(s.cases())
    assert [(c.pass_, c.grads) for c in cases] == [
        ("forward", None), ("backward", ("input", "weight")), ("forward+backward", ("input", "weight")),
        ("backward", ("weight",)), ("backward", ("input",)), ("backward", ("input", "weight"))]
    assert s.count() == len(cases) == 6
    assert len({c.config_id for c in cases}) == 1                   # one layer: the ratio pairs on it
    # the default (every gradient a conv has) and ["weight", "input"] written out are the same case
    assert cases[1].case_id == cases[5].case_id
    assert len({c.case_id for c in cases[:5]}) == 5
    assert cases[3].grads_text() == "weight"


def test_passes_cross_like_dtypes_and_the_suite_sets_them():
    s = suite(dict(CONV), {"layer": "relu", "input": "2x3", "passes": ["forward"]}, dtypes=["fp32", "fp16"],
              passes=["forward", "backward"])
    assert [(c.layer, c.dtype, c.pass_) for c in s.cases()] == [
        ("conv2d", "fp32", "forward"), ("conv2d", "fp32", "backward"), ("conv2d", "fp16", "forward"),
        ("conv2d", "fp16", "backward"), ("relu", "fp32", "forward"), ("relu", "fp16", "forward")]
    assert s.count() == 6 and s.count(["fp32"]) == 3 and s.all_passes() == ("forward", "backward")
    only = s.with_passes(["backward"])                               # --pass replaces every sweep's
    assert [c.pass_ for c in only.cases()] == ["backward"] * 4 and only.count() == 4


def test_a_weight_gradient_of_a_layer_without_parameters_is_a_skipped_row():
    s = suite({"layer": "relu", "input": "2x3", "passes": ["backward"], "grads": ["weight"]},
              {"layer": "relu", "input": "2x3", "passes": ["backward"]},
              {"layer": "layernorm", "input": "2x3", "params": {"c": 3, "affine": False}, "passes": ["backward"]})
    weight, default, frozen_norm = s.cases()
    assert weight.skip == ("relu: grads=['weight'] is invalid: expected ['input']: the layer has no parameters, "
                           "so no weight gradient") and weight.spec is None
    assert default.skip is None and default.grads == ("input",)
    assert frozen_norm.grads == ("input",)                           # affine=False: no parameters


@pytest.mark.parametrize("sweep, top, key, expected", [
    ({"passes": ["backwards"]}, {}, "sweep[0].passes", "expected one of forward, backward, forward+backward"),
    ({}, {"passes": "backward"}, "passes", "expected a list"),
    ({"passes": []}, {}, "sweep[0].passes", "expected a list of distinct passes"),
    ({"passes": ["backward"], "grads": ["bias"]}, {}, "sweep[0].grads", "expected input or weight"),
    ({"passes": ["backward"], "grads": []}, {}, "sweep[0].grads", "expected a list of distinct gradients"),
    ({"grads": ["weight"]}, {}, "sweep[0].grads", "grads only where the sweep times a backward"),
])
def test_bad_passes_and_grads_are_one_line_naming_file_key_and_value(sweep, top, key, expected):
    with pytest.raises(SuiteError) as e:
        parse_suite({"sweep": [dict(CONV, **sweep)], **top}, "suites/train.toml")
    text = str(e.value)
    assert e.value.key == key and text.startswith(f"suites/train.toml: {key}=") and expected in text
    assert "\n" not in text
