//! `tensor-wasm run --invoke`: typed exports called with WAVE arguments,
//! results printed as WAVE; mismatches and traps are one clear error.

use crate::support::{guest, run};

fn invoke(call: &str) -> (i32, String, String) {
    let calc = guest("calc");
    run(&["run", "--invoke", call, calc.to_str().unwrap()])
}

#[test]
fn run_invoke_calls_typed_exports_with_wave_values() {
    for (call, want) in [
        ("add(1, 2)", "ok(3)"),
        (
            "add(2147483647, 1)",
            "err(\"2147483647 + 1 overflows s32\")",
        ),
        ("greet(\"ada\", some(true))", "\"Hello, ada!\""),
        // A trailing option may be left out.
        ("greet(\"ada\")", "\"Hello, ada.\""),
        (
            "summarize([1.0, 2.5, 4.5], some(\"x\"))",
            "{count: 3, mean: 2.6666666666666665, label: some(\"x\")}",
        ),
    ] {
        let (code, out, err) = invoke(call);
        assert_eq!((code, out.trim()), (0, want), "{call}: {err}");
    }
}

#[test]
fn run_invoke_refuses_what_does_not_fit_with_one_clear_error() {
    for (call, says) in [
        ("add(1, \"x\")", "parameter `b`"),
        ("add(1)", "missing required param"),
        (
            "nope()",
            "exports no function `nope` (it exports add, greet, summarize, boom, spin)",
        ),
        ("add(1,", "unexpected end of input"),
        ("boom()", "trapped"),
    ] {
        let (code, out, err) = invoke(call);
        assert_ne!(code, 0, "{call}: {out}");
        assert!(err.contains(says), "{call}: {err}");
        assert_eq!(
            err.lines().filter(|l| l.starts_with("error:")).count(),
            1,
            "{err}"
        );
    }
    // Without --invoke a component that is not a command is refused as before.
    let calc = guest("calc");
    let (code, _, err) = run(&["run", calc.to_str().unwrap()]);
    assert!(
        code != 0 && err.contains("does not export wasi:cli/run"),
        "{err}"
    );
}
