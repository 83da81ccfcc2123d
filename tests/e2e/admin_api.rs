//! The admin API (`/v1/` on the admin listener): admin tokens from the
//! data dir, scopes, and the deployment set as JSON.

use crate::support::{Server, deployment_file, guest, request, scratch, token_hash};
use serde_json::Value;

fn get(server: &Server, path: &str, token: Option<&str>) -> (u16, Value, String) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    let resp = request(server.admin, "GET", path, &headers, b"");
    let body = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
    let www = resp
        .header("www-authenticate")
        .unwrap_or_default()
        .to_string();
    (resp.status, body, www)
}

/// A server with `shop` (tenant acme, reusing) and `lab` (tenant lab), an
/// extra token scoped to acme, and the admin token it made.
fn start(name: &str, scoped: &str) -> (Server, String) {
    let dir = scratch(name);
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let line = format!("ci {} deploy:acme\n", token_hash(scoped));
    std::fs::write(data.join("admin-tokens"), line).unwrap();
    let hello = guest("hello");
    let file = deployment_file(
        &dir,
        &format!(
            "[[deployment]]\nname = \"shop\"\ntenant = \"acme\"\ncomponent = {hello:?}\n\
             route = {{ path = \"/hello\" }}\ninstances = {{ reuse = 10 }}\n\n\
             [[deployment]]\nname = \"lab\"\ntenant = \"lab\"\ncomponent = {hello:?}\n"
        ),
    );
    let args = [file.to_str().unwrap(), "--data-dir", data.to_str().unwrap()];
    let server = Server::start(&args, &dir.join("cache"));
    let token_file = data.join("admin-token");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let admin = std::fs::read_to_string(&token_file).unwrap();
    (server, admin.trim().to_string())
}

#[test]
fn admin_api_lists_deployments_to_tokens_with_the_scope() {
    let scoped = "tw_scoped_token_for_acme";
    let (server, admin) = start("admin-api", scoped);
    let (status, _, www) = get(&server, "/v1/deployments", None);
    assert_eq!((status, www.as_str()), (401, "Bearer"));
    assert_eq!(get(&server, "/v1/deployments", Some("tw_wrong")).0, 401);
    let (status, all, _) = get(&server, "/v1/deployments", Some(&admin));
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["deployments"].as_array().unwrap().len(), 2, "{all}");
    assert_eq!(server.get("/hello").status, 200);
    let (status, shop, _) = get(&server, "/v1/deployments/shop", Some(&admin));
    assert_eq!(status, 200);
    assert_eq!(shop["tenant"], "acme");
    assert_eq!(shop["route"]["path"], "/hello");
    assert_eq!(shop["instances"]["reuse"], 10);
    assert!(
        shop["instances"]["idle_now"].as_u64().unwrap() <= 1,
        "{shop}"
    );
    assert!(shop["requests"]["ok"].as_u64().unwrap() >= 1, "{shop}");
    assert!(shop["source"].as_str().unwrap().ends_with("hello.wasm"));
    let digest = blake3::hash(&std::fs::read(guest("hello")).unwrap());
    assert_eq!(
        shop["digests"]["component"],
        format!("blake3:{}", digest.to_hex()),
        "{shop}"
    );
    assert_eq!(get(&server, "/v1/deployments/nope", Some(&admin)).0, 404);
    // A token scoped to one tenant sees that tenant only.
    let (_, mine, _) = get(&server, "/v1/deployments", Some(scoped));
    assert_eq!(mine["deployments"].as_array().unwrap().len(), 1, "{mine}");
    assert_eq!(get(&server, "/v1/deployments/lab", Some(scoped)).0, 403);
    let auth = format!("Bearer {admin}");
    let headers = [("authorization", auth.as_str())];
    // A spec without a tenant changes nothing (tests/e2e/live.rs has the rest).
    let put = request(server.admin, "PUT", "/v1/deployments/shop", &headers, b"{}");
    assert_eq!(put.status, 400, "{}", put.text());
    assert!(put.text().contains("tenant"), "{}", put.text());
}
