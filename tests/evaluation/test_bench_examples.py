"""The sample-file check (evaluation.bench_examples): its indentation rule and its verdicts."""
from evaluation.bench_examples import check, indent_errors

C_OK = "int f(int n) {\n    if (n) {\n        return 1;\n    }\n    return 0;\n}\n"


def test_intact_indentation_has_no_errors():
    assert indent_errors(C_OK, "c") == []
    assert indent_errors("/* a\n   b */\nint x;\n" + C_OK, "c") == []  # block comments are skipped
    assert indent_errors("func f() {\n\tif x {\n\t\treturn\n\t}\n}\n", "go") == []


def test_a_line_one_column_too_deep_is_named():
    bad = C_OK.replace("        return 1;", "         return 1;")
    errors = indent_errors(bad, "c")
    assert len(errors) == 1 and errors[0].startswith("3: indent 9, brackets say 8")


def test_mixed_indentation_is_named():
    assert indent_errors("func f() {\n    return\n}\n", "go")[0].startswith("2: mixed indentation")
    assert indent_errors("def f():\n\treturn 1\n    \n", "python")[0].startswith("2: mixed indentation")


def test_python_verdict_is_the_compiler_s():
    assert check("x.py", "def f():\n    return 1\n")["compiles"]
    bad = check("x.py", "def f():\n    x = 1\n     return x\n")
    assert not bad["compiles"] and not bad["ok"] and "indent" in bad["compile_log"].lower()


def test_a_parse_error_fails_without_a_compiler_too():
    verdict = check("x.ts", "export function f(: number {\n")  # tsc or tree-sitter: either says no
    assert not verdict["compiles"]
