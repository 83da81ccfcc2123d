//! Bad input at start-up: one clear error naming the file and the problem,
//! a non-zero exit, never a panic.

use crate::support::*;

fn serve_fails(path: &str, extra: &[&str], dir: &std::path::Path) -> String {
    let cache = dir.join("cache");
    let data = dir.join("data");
    let mut args = vec![
        "serve",
        path,
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "off",
        "--cache-dir",
        cache.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let (code, _, stderr) = run(&args);
    assert_ne!(code, 0, "serving {path} should fail; stderr:\n{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.to_lowercase().contains("backtrace"),
        "{stderr}"
    );
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "expected one error line:\n{stderr}");
    errors[0].to_string()
}

#[test]
fn bad_files_get_one_clear_error() {
    let dir = scratch("bad_input");
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p.to_str().unwrap().to_string()
    };
    let text = write("notes.wasm", b"hello, I am not wasm");
    let e = serve_fails(&text, &[], &dir);
    assert!(
        e.contains("notes.wasm") && e.contains("not a WebAssembly file"),
        "{e}"
    );

    let core = write("core.wasm", b"\0asm\x01\0\0\0");
    let e = serve_fails(&core, &[], &dir);
    assert!(
        e.contains("core.wasm") && e.contains("core WebAssembly module, not a component"),
        "{e}"
    );

    let empty = write("empty.wasm", b"\0asm\x0d\0\x01\0");
    let e = serve_fails(&empty, &[], &dir);
    assert!(
        e.contains("empty.wasm") && e.contains("does not export wasi:http/incoming-handler"),
        "{e}"
    );

    let truncated = std::fs::read(guest("hello")).unwrap();
    let truncated = write("truncated.wasm", &truncated[..truncated.len() / 2]);
    let e = serve_fails(&truncated, &[], &dir);
    assert!(
        e.contains("truncated.wasm") && e.contains("invalid component"),
        "{e}"
    );

    // The guard middleware alone imports an incoming-handler nobody provides.
    let guard = guest("guard");
    let e = serve_fails(guard.to_str().unwrap(), &[], &dir);
    assert!(
        e.contains("guard.wasm")
            && e.contains("wasi:http/incoming-handler@0.2.12")
            && e.contains("cannot satisfy"),
        "{e}"
    );

    let missing = dir.join("missing.wasm");
    let e = serve_fails(missing.to_str().unwrap(), &[], &dir);
    assert!(e.contains("missing.wasm"), "{e}");
}

#[test]
fn bad_worlds_get_one_clear_error() {
    let dir = scratch("bad_worlds");
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let syntax = write("syntax.wac", "package a:b;\nlet x = new ;\n");
    let e = serve_fails(&syntax, &[], &dir);
    assert!(e.contains("syntax.wac:2:"), "{e}");

    let unknown = write(
        "unknown.wac",
        "package a:b;\nlet x = new acme:nothing { ... };\nexport x[\"wasi:http/incoming-handler@0.2.12\"];\n",
    );
    let e = serve_fails(&unknown, &[], &dir);
    assert!(
        e.contains("unknown.wac:2:") && e.contains("unknown package `acme:nothing`"),
        "{e}"
    );

    let unfilled = write(
        "unfilled.wac",
        "package a:b;\nlet g = new tensorwasm:guard { ... };\nexport g[\"wasi:http/incoming-handler@0.2.12\"];\n",
    );
    let e = serve_fails(&unfilled, &[], &dir);
    assert!(
        e.contains("unfilled.wac") && e.contains("wasi:http/incoming-handler@0.2.12"),
        "{e}"
    );
}

#[test]
fn bad_deployment_files_get_one_clear_error() {
    let dir = scratch("bad_deployments");
    let hello = guest("hello");
    let cases = [
        (
            "syntax.toml",
            "[[deployment]\nname = 1".to_string(),
            "syntax.toml:1",
        ),
        (
            "unknown.toml",
            format!(
                "[[deployment]]\nname = \"a\"\ntenant = \"t\"\ncomponent = {:?}\ncolour = \"red\"\n",
                hello
            ),
            "unknown field `colour`",
        ),
        (
            "both.toml",
            format!(
                "[[deployment]]\nname = \"a\"\ntenant = \"t\"\ncomponent = {:?}\nworld = \"x.wac\"\n",
                hello
            ),
            "exactly one of `component` or `world`",
        ),
        (
            "limit.toml",
            format!(
                "[[deployment]]\nname = \"a\"\ntenant = \"t\"\ncomponent = {:?}\nlimits = {{ memory = \"lots\" }}\n",
                hello
            ),
            "invalid size `lots`",
        ),
        (
            "nofile.toml",
            "[[deployment]]\nname = \"a\"\ntenant = \"t\"\ncomponent = \"nowhere.wasm\"\n"
                .to_string(),
            "nowhere.wasm",
        ),
        (
            "same.toml",
            format!(
                "[[deployment]]\nname = \"a\"\ntenant = \"t\"\ncomponent = {hello:?}\n[[deployment]]\nname = \"b\"\ntenant = \"u\"\ncomponent = {hello:?}\n"
            ),
            "same route",
        ),
    ];
    for (name, text, needle) in cases {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        let e = serve_fails(p.to_str().unwrap(), &[], &dir);
        assert!(e.contains(needle), "{name}: {e}");
        if needle != "same route" {
            assert!(e.contains(name), "{name}: {e}");
        }
    }
}

#[test]
fn bad_flags_get_one_clear_error() {
    let (code, _, err) = run(&["serve", "--request-timeout", "soon"]);
    assert_ne!(code, 0);
    assert!(err.contains("invalid duration `soon`"), "{err}");
    let (code, _, err) = run(&["serve", "--max-memory", "12 parsecs"]);
    assert_ne!(code, 0);
    assert!(err.contains("invalid size"), "{err}");
}

#[test]
fn bad_keyvalue_backends_are_one_clear_error() {
    let dir = scratch("bad_keyvalue_backends");
    let notes = guest("notes");
    for (table, want) in [
        ("backend = \"postgres://x\"", "must be a Redis URL"),
        (
            "backend = \"redis://127.0.0.1:1/0\"\nbuckets = [\"\"]",
            "is not a bucket identifier",
        ),
        (
            "backend = \"redis://127.0.0.1:1/0\"\nbucket = [\"a\"]",
            "unknown field `bucket`",
        ),
        ("backend = \"redis://[::1\"", "is not a Redis URL"),
    ] {
        let file = deployment_file(
            &dir,
            &format!(
                "[[deployment]]\nname = \"a\"\ntenant = \"t\"\ncomponent = {notes:?}\n\n\
                 [deployment.keyvalue]\n{table}\n"
            ),
        );
        let error = serve_fails(file.to_str().unwrap(), &[], &dir);
        assert!(error.contains(want), "{table}: {error}");
    }
}
