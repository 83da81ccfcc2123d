//! Deployment files: several tenants on one server, routed apart, each with
//! its own limits and grants (and nothing granted by default).

use crate::support::*;

#[test]
fn two_tenants_are_routed_apart_with_their_own_limits_and_grants() {
    let dir = scratch("two_tenants");
    // An upstream for outgoing HTTP: another real server.
    let upstream = Server::start(&[guest("hello").to_str().unwrap()], &dir.join("cache"));
    std::fs::create_dir_all(dir.join("shared-data")).unwrap();
    let file = deployment_file(
        &dir,
        &format!(
            r#"
[[deployment]]
name = "alpha"
tenant = "acme"
component = {hello:?}
route = {{ host = "alpha.test" }}

[[deployment]]
name = "beta"
tenant = "globex"
component = {hostile:?}
route = {{ host = "beta.test" }}
limits = {{ timeout = "1s", memory = "32MiB" }}

[deployment.grants]
env = {{ GREETING = "hi" }}
config = {{ currency = "EUR" }}
outgoing-hosts = ["{upstream}"]
dirs = [{{ host = "shared-data", guest = "/data" }}]

[[deployment]]
name = "bare"
tenant = "initech"
component = {hostile:?}
route = {{ host = "bare.test" }}

[[deployment]]
name = "delta"
tenant = "globex"
component = {hello:?}
route = {{ host = "beta.test", path = "/hello" }}
"#,
            hello = guest("hello"),
            hostile = guest("hostile"),
            upstream = upstream.addr,
        ),
    );
    let server = Server::start(&[file.to_str().unwrap()], &dir.join("cache"));
    let on = |host: &str, path: &str| request(server.addr, "GET", path, &[("host", host)], b"");

    assert_eq!(
        on("alpha.test", "/hello").text(),
        "Hello from TensorWasm!\n"
    );
    assert_eq!(on("ALPHA.test:8080", "/hello").status, 200);
    assert_eq!(on("beta.test", "/ok").text(), "ok\n");
    // The longest matching prefix wins: /hello on beta.test is delta's.
    assert_eq!(on("beta.test", "/hello").text(), "Hello from TensorWasm!\n");
    assert_eq!(on("beta.test", "/hellox").status, 404); // hostile has no /hellox
    assert_eq!(on("alpha.test", "/ok").status, 404); // hello has no /ok
    let nobody = on("nobody.test", "/hello");
    assert_eq!(nobody.status, 404);
    assert!(nobody.text().contains("no_route"));

    // Grants: beta sees exactly what it was granted; bare sees nothing.
    assert_eq!(on("beta.test", "/env").text(), "GREETING=hi");
    assert_eq!(on("beta.test", "/fs").text(), "/data");
    assert_eq!(on("bare.test", "/env").text(), "");
    assert_eq!(on("bare.test", "/fs").text(), "");
    // Granted config, plus the keys the host sets for every deployment.
    let device = format!("tensorwasm.tensor-device={}", server.tensor_device());
    let mut beta: Vec<String> = on("beta.test", "/config")
        .text()
        .lines()
        .map(String::from)
        .collect();
    beta.sort();
    assert_eq!(
        beta,
        [
            "currency=EUR",
            "tensorwasm.deployment=beta",
            "tensorwasm.tenant=globex",
            &device,
        ]
    );
    let mut bare: Vec<String> = on("bare.test", "/config")
        .text()
        .lines()
        .map(String::from)
        .collect();
    bare.sort();
    assert_eq!(
        bare,
        [
            "tensorwasm.deployment=bare",
            "tensorwasm.tenant=initech",
            &device
        ]
    );
    let fetch = format!("/fetch?url=http://{}/hello", upstream.addr);
    assert_eq!(
        on("beta.test", &fetch).text(),
        "status 200: Hello from TensorWasm!\n"
    );
    let denied = on("bare.test", &fetch).text();
    assert!(denied.contains("HttpRequestDenied"), "{denied}");
    // Granting host:port does not grant other ports.
    let other = on("beta.test", "/fetch?url=http://127.0.0.1:1/").text();
    assert!(other.contains("HttpRequestDenied"), "{other}");

    // Beta's own limits: a 1 s budget and a 32 MiB cap.
    let t0 = std::time::Instant::now();
    let r = on("beta.test", "/loop");
    assert_eq!(r.status, 504);
    assert!(t0.elapsed() < std::time::Duration::from_millis(2500));
    assert!(r.text().contains("1s"), "{}", r.text());
    let r = on("beta.test", "/oom");
    assert_eq!(r.status, 500);
    assert!(r.text().contains("32MiB"), "{}", r.text());

    let m = server.metrics();
    assert_eq!(
        metric(
            &m,
            "tensorwasm_requests_total",
            &["deployment=\"alpha\"", "status=\"200\""]
        ),
        2.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "tensorwasm_deadline_kills_total",
            &["deployment=\"beta\""]
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "tensorwasm_deadline_kills_total",
            &["deployment=\"alpha\""]
        ),
        0.0,
        "{m}"
    );
}

#[test]
fn concurrency_limit_queues_requests_within_their_budget() {
    let dir = scratch("concurrency");
    let file = deployment_file(
        &dir,
        &format!(
            "[[deployment]]\nname = \"one\"\ntenant = \"t\"\ncomponent = {:?}\nlimits = {{ concurrency = 1, timeout = \"2s\" }}\n",
            guest("hostile")
        ),
    );
    let server = Server::start(&[file.to_str().unwrap()], &dir.join("cache"));
    let addr = server.addr;
    let get = move |path: &'static str| {
        std::thread::spawn(move || {
            let t0 = std::time::Instant::now();
            let r = request(addr, "GET", path, &[], b"");
            (r.status, t0.elapsed())
        })
    };
    // B queues behind A and still finishes within its own 2 s budget.
    let a = get("/slow?ms=1200");
    std::thread::sleep(std::time::Duration::from_millis(150));
    let b = get("/slow?ms=100");
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    assert_eq!(a.0, 200);
    assert_eq!(b.0, 200);
    assert!(
        b.1 >= std::time::Duration::from_millis(900),
        "B did not wait: {:?}",
        b.1
    );
}

#[test]
fn many_deployments_of_one_component_share_its_compiled_code_and_absurd_counts_are_refused() {
    let dir = scratch("many_deployments");
    let hello = guest("hello");
    let many = |n: usize| {
        (0..n)
            .map(|i| {
                format!(
                    "[[deployment]]\nname = \"d{i}\"\ntenant = \"t{}\"\ncomponent = {hello:?}\n\
                     route = {{ host = \"d{i}.test\" }}\n\n",
                    i % 10
                )
            })
            .collect::<String>()
    };
    let file = deployment_file(&dir, &many(300));
    let server = Server::start(&[file.to_str().unwrap()], &dir.join("cache"));
    for i in [0, 150, 299] {
        let host = format!("d{i}.test");
        let r = request(server.addr, "GET", "/hello", &[("host", &host)], b"");
        assert_eq!(r.status, 200, "{host}");
    }
    // The component was compiled (or loaded from the cache) once, not 300 times.
    let log = server.log();
    let loads = log.matches("hello.wasm: compiled in").count()
        + log.matches("hello.wasm: loaded from cache").count();
    assert_eq!(loads, 1, "{log}");
    drop(server);

    let too_many = dir.join("too-many.toml");
    std::fs::write(&too_many, many(10_001)).unwrap();
    let (code, _, err) = run(&["serve", too_many.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        err.contains("10001 deployments; one server takes at most 10000"),
        "{err}"
    );
}
