//! The OpenAPI 3.1 document: served, and in step with the routes both ways (every documented
//! endpoint is in it, every operation in it is served). schemathesis (in `.ci/run`) then checks
//! the server's answers against it.

use cryptobot_integration_tests::{TestApp, http};
use serde_json::Value;

const API_MD: &str = include_str!("../../docs/api.md");

/// `(METHOD, /path)` of every row of docs/api.md's endpoint table.
fn documented_endpoints() -> Vec<(String, String)> {
    API_MD
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split('`').next())
        .filter_map(|endpoint| endpoint.split_once(' '))
        .filter(|(method, path)| {
            method.chars().all(|c| c.is_ascii_uppercase()) && path.starts_with('/')
        })
        .map(|(method, path)| (method.to_owned(), path.to_owned()))
        .collect()
}

fn operations(spec: &Value) -> Vec<(String, String)> {
    let mut ops = Vec::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            ops.push((method.to_ascii_uppercase(), path.clone()));
        }
    }
    ops.sort();
    ops
}

#[tokio::test]
async fn the_document_is_served_and_lists_exactly_the_documented_endpoints() {
    let app = TestApp::spawn(&[]).await;
    let response = app.get("/api/v1/openapi.json").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("application/json"));
    let spec = response.json();
    assert_eq!(spec["openapi"], "3.1.0");
    assert_eq!(
        spec,
        serde_json::from_str::<Value>(&cryptobot_server::routes::OPENAPI).unwrap()
    );
    let mut documented = documented_endpoints();
    documented.sort();
    assert!(documented.len() >= 10, "{documented:?}");
    assert_eq!(
        operations(&spec),
        documented,
        "docs/api.md's table and the OpenAPI paths"
    );
    // Every error answer refers to the one error shape.
    let responses = spec["components"]["responses"].as_object().unwrap();
    for (name, response) in responses {
        assert_eq!(
            response["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/Error",
            "{name}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn every_operation_of_the_document_is_served() {
    let app = TestApp::spawn(&[]).await;
    let spec: Value = serde_json::from_str(&cryptobot_server::routes::OPENAPI).unwrap();
    for (method, path) in operations(&spec) {
        let path = path.replace("{symbol}", "BTCUSDT");
        let body: &[u8] = if method == "GET" { b"" } else { b"{}" };
        let response =
            http::request(app.addr, &method, &path, Some("application/json"), body).await;
        // Refusing the empty body or the missing upgrade is fine; an unknown route or method is not.
        assert!(
            response.status != 405 && !response.body.contains("\"not_found\""),
            "{method} {path}: {} {}",
            response.status,
            response.body
        );
        let status = response.status.to_string();
        let op = &spec["paths"][path.replace("BTCUSDT", "{symbol}")][method.to_ascii_lowercase()];
        assert!(
            op["responses"].get(&status).is_some(),
            "{method} {path}: undocumented {status}"
        );
    }
    app.stop().await;
}
