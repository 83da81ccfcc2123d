//! `wasi:keyvalue` from a guest (`components/notes`) over real HTTP: values,
//! deletes, atomic increments, listing, errors, and tenants kept apart.

use crate::support::*;

#[test]
fn buckets_hold_values_and_tenants_cannot_read_each_other() {
    let dir = scratch("keyvalue_tenants");
    let notes = guest("notes");
    let file = deployment_file(
        &dir,
        &format!(
            r#"
[[deployment]]
name = "a"
tenant = "tenant-a"
component = {notes:?}
route = {{ host = "a.test" }}

[[deployment]]
name = "a2"
tenant = "tenant-a"
component = {notes:?}
route = {{ host = "a2.test" }}

[[deployment]]
name = "b"
tenant = "tenant-b"
component = {notes:?}
route = {{ host = "b.test" }}
"#
        ),
    );
    let server = Server::start(&[file.to_str().unwrap()], &dir.join("cache"));
    let on = |host: &str, method: &str, path: &str, body: &[u8]| {
        request(server.addr, method, path, &[("host", host)], body)
    };

    assert_eq!(on("a.test", "GET", "/notes/k", b"").status, 404);
    assert_eq!(on("a.test", "PUT", "/notes/k", b"secret of a").status, 204);
    assert_eq!(
        on("a.test", "PUT", "/notes/k?bucket=shared", b"also a's").status,
        204
    );
    assert_eq!(
        on("a.test", "GET", "/notes/k", b"").text_ok(),
        "secret of a"
    );
    // Another deployment of the same tenant shares its buckets...
    assert_eq!(
        on("a2.test", "GET", "/notes/k", b"").text_ok(),
        "secret of a"
    );
    // ... another tenant, with the same bucket names, sees none of it.
    assert_eq!(on("b.test", "GET", "/notes/k", b"").status, 404);
    assert_eq!(
        on("b.test", "GET", "/notes/k?bucket=shared", b"").status,
        404
    );
    assert_eq!(on("b.test", "GET", "/notes", b"").text(), "[]");
    for sneaky in [
        "../tenant-a/notes",
        "kv/8/tenant-a/notes",
        "8/tenant-a/notes",
    ] {
        let r = on("b.test", "GET", &format!("/notes/k?bucket={sneaky}"), b"");
        assert_eq!(r.status, 404, "{sneaky}: {}", r.text());
    }
    assert_eq!(on("b.test", "PUT", "/notes/k", b"b's own").status, 204);
    assert_eq!(
        on("a.test", "GET", "/notes/k", b"").text_ok(),
        "secret of a"
    );
    assert_eq!(on("b.test", "GET", "/notes/k", b"").text_ok(), "b's own");

    // Volatile buckets (in the server's memory) are per tenant too.
    assert_eq!(
        on("a.test", "PUT", "/notes/v?bucket=volatile:c", b"hot").status,
        204
    );
    assert_eq!(
        on("a2.test", "GET", "/notes/v?bucket=volatile:c", b"").text_ok(),
        "hot"
    );
    assert_eq!(
        on("b.test", "GET", "/notes/v?bucket=volatile:c", b"").status,
        404
    );
    assert_eq!(
        on(
            "a.test",
            "POST",
            "/notes/v2/incr?bucket=volatile:c&by=3",
            b""
        )
        .text_ok(),
        "{\"value\":3}"
    );

    // Increments are atomic counters in decimal; a non-number refuses them.
    assert_eq!(
        on("a.test", "POST", "/notes/n/incr?by=5", b"").text_ok(),
        "{\"value\":5}"
    );
    assert_eq!(
        on("a.test", "POST", "/notes/n/incr", b"").text_ok(),
        "{\"value\":6}"
    );
    assert_eq!(on("a.test", "GET", "/notes/n", b"").text_ok(), "6");
    let r = on("a.test", "POST", "/notes/k/incr", b"");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("not a decimal number"), "{}", r.text());
    assert_eq!(
        on("a.test", "GET", "/notes/k", b"").text_ok(),
        "secret of a"
    );

    // Listing and deleting.
    assert_eq!(
        on("a.test", "GET", "/notes", b"").text_ok(),
        "[\"k\",\"n\"]"
    );
    assert_eq!(on("a.test", "DELETE", "/notes/k", b"").status, 204);
    assert_eq!(on("a.test", "GET", "/notes/k", b"").status, 404);
    assert_eq!(on("a.test", "GET", "/notes", b"").text_ok(), "[\"n\"]");

    // Oversized keys are refused with a clear error; the server goes on.
    let long = "k".repeat(5000);
    let r = on("a.test", "PUT", &format!("/notes/{long}"), b"v");
    assert_eq!(r.status, 400);
    assert!(r.text().contains("at most 4096"), "{}", r.text());
    assert_eq!(on("a.test", "GET", "/notes/n", b"").text_ok(), "6");
}

trait TextOk {
    fn text_ok(self) -> String;
}

impl TextOk for Resp {
    /// The body of a 200, failing the test on any other status.
    fn text_ok(self) -> String {
        assert_eq!(self.status, 200, "{}", self.text());
        self.text()
    }
}
