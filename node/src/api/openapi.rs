//! `GET /openapi.json`: the OpenAPI 3.0 description of the node's HTTP API, hand-written in
//! `node/openapi.json` and compiled into the binary. The tests below keep it true to the router:
//! every route of `server.rs` is described with its methods, and nothing else is;
//! `tools/scripts/schemathesis.sh` checks the answers against it.

use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};

/// The document, as served.
pub const SPEC: &str = include_str!("../../openapi.json");

/// `GET /openapi.json`.
pub async fn handler() -> Response {
    ([(CONTENT_TYPE, "application/json")], SPEC).into_response()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;

    const METHODS: &[&str] = &["get", "put", "post", "delete", "patch", "head", "options"];

    fn spec() -> Value {
        serde_json::from_str(SPEC).expect("node/openapi.json is not valid JSON")
    }

    /// Every `$ref` in `v`, with where it was found.
    fn refs(v: &Value, at: &str, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("$ref", Value::String(r)) => out.push((at.to_string(), r.clone())),
                        _ => refs(v, &format!("{at}/{k}"), out),
                    }
                }
            }
            Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    refs(v, &format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }

    /// `(path, method)` of every operation of the document.
    fn documented(spec: &Value) -> BTreeSet<(String, String)> {
        let paths = spec["paths"].as_object().expect("paths");
        let mut out = BTreeSet::new();
        for (path, item) in paths {
            for method in item.as_object().expect("path item").keys() {
                if METHODS.contains(&method.as_str()) {
                    out.insert((path.clone(), method.clone()));
                }
            }
        }
        out
    }

    /// The text from `open` (an index just past an opening parenthesis) to its matching close,
    /// skipping string literals.
    fn call_args(src: &str, open: usize) -> &str {
        let b = src.as_bytes();
        let (mut depth, mut i, mut in_str) = (1usize, open, false);
        while i < b.len() {
            match (in_str, b[i]) {
                (true, b'\\') => i += 1,
                (true, b'"') => in_str = false,
                (false, b'"') => in_str = true,
                (false, b'(') => depth += 1,
                (false, b')') => {
                    depth -= 1;
                    if depth == 0 {
                        return &src[open..i];
                    }
                }
                _ => {}
            }
            i += 1;
        }
        panic!("unbalanced parentheses after byte {open} of server.rs");
    }

    /// The HTTP methods a route's method router names: `get(`, `.put(`, `post(`, `.delete(`...
    /// (a handler path like `kv::get` is not followed by a parenthesis; `::get(` is skipped).
    fn methods_of(args: &str) -> BTreeSet<String> {
        let b = args.as_bytes();
        let mut out = BTreeSet::new();
        for m in METHODS {
            let mut from = 0;
            while let Some(i) = args[from..].find(&format!("{m}(")).map(|i| i + from) {
                let before = if i == 0 { b' ' } else { b[i - 1] };
                if !(before.is_ascii_alphanumeric() || before == b'_' || before == b':') {
                    out.insert((*m).to_string());
                }
                from = i + 1;
            }
        }
        out
    }

    /// axum's path syntax in OpenAPI's: `{*key}` (a catch-all) is `{key}`.
    fn openapi_path(axum: &str) -> String {
        axum.replace("{*", "{")
    }

    /// `(path, method)` of every `.route("...", ...)` call in `server.rs` (comments skipped).
    fn routed() -> BTreeSet<(String, String)> {
        let src: String = include_str!("../server.rs")
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let mut out = BTreeSet::new();
        let mut from = 0;
        while let Some(i) = src[from..].find(".route(").map(|i| i + from) {
            let open = i + ".route(".len();
            let args = call_args(&src, open);
            from = open;
            let Some(rest) = args.trim_start().strip_prefix('"') else {
                continue;
            };
            let path = &rest[..rest.find('"').expect("unterminated route path")];
            let methods = methods_of(&rest[path.len() + 1..]);
            assert!(
                !methods.is_empty(),
                "route {path}: no method found in {args:?}"
            );
            for m in methods {
                out.insert((openapi_path(path), m));
            }
        }
        out
    }

    #[test]
    fn the_document_is_openapi_3_json() {
        let s = spec();
        assert_eq!(s["openapi"], "3.0.3");
        assert!(s["info"]["title"].is_string() && s["info"]["version"].is_string());
        let ops = documented(&s);
        assert!(ops.len() >= 20, "{ops:?}");
        let mut ids = BTreeSet::new();
        for (path, method) in &ops {
            let op = &s["paths"][path][method];
            let id = op["operationId"].as_str().unwrap_or_default();
            assert!(
                ids.insert(id.to_string()),
                "{method} {path}: operationId {id:?} twice"
            );
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {path}: no responses"
            );
        }
    }

    #[test]
    fn every_ref_resolves() {
        let s = spec();
        let mut found = Vec::new();
        refs(&s, "#", &mut found);
        assert!(found.len() > 50, "{} refs", found.len());
        for (at, r) in found {
            let pointer = r
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("{at}: {r} is not a local reference"));
            assert!(
                s.pointer(pointer).is_some(),
                "{at}: {r} resolves to nothing"
            );
        }
    }

    /// Every `{param}` of a path is a required path parameter of each of its operations, and
    /// every secured operation documents its 401.
    #[test]
    fn parameters_and_security_are_declared() {
        let s = spec();
        let resolve = |v: &Value| -> Value {
            match v["$ref"].as_str() {
                Some(r) => s.pointer(&r[1..]).cloned().unwrap_or(Value::Null),
                None => v.clone(),
            }
        };
        for (path, method) in documented(&s) {
            let item = &s["paths"][&path];
            let op = &item[&method];
            let params: Vec<Value> = [&item["parameters"], &op["parameters"]]
                .iter()
                .filter_map(|p| p.as_array())
                .flatten()
                .map(resolve)
                .collect();
            for seg in path.split('/') {
                if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    assert!(
                        params.iter().any(|p| p["in"] == "path"
                            && p["name"] == name
                            && p["required"] == true),
                        "{method} {path}: path parameter {name} is not declared"
                    );
                }
            }
            if op["security"]
                .as_array()
                .is_some_and(|s| s.iter().any(|r| r.get("bearerAuth").is_some()))
            {
                assert!(
                    op["responses"].get("401").is_some(),
                    "{method} {path}: secured without a 401"
                );
            }
        }
    }

    /// Both ways: a route added to the router must be described, and a described operation must
    /// exist.
    #[test]
    fn the_document_describes_every_route_and_nothing_else() {
        let routed = routed();
        assert!(
            routed.contains(&("/kv/{key}".to_string(), "put".to_string())),
            "the route parser found {routed:?}"
        );
        let documented = documented(&spec());
        let undocumented: Vec<_> = routed.difference(&documented).collect();
        let unrouted: Vec<_> = documented.difference(&routed).collect();
        assert!(
            undocumented.is_empty(),
            "routes of server.rs missing from node/openapi.json: {undocumented:?}"
        );
        assert!(
            unrouted.is_empty(),
            "operations of node/openapi.json with no route in server.rs: {unrouted:?}"
        );
    }

    #[test]
    fn the_route_parser_reads_method_chains() {
        assert_eq!(
            methods_of(r#""/kv/{*key}", get(kv::get).put(kv::put).delete(kv::delete)"#),
            ["delete", "get", "put"].map(String::from).into()
        );
        assert_eq!(
            methods_of(r#""/m", get(crate::ops::metrics::handler)"#),
            ["get"].map(String::from).into()
        );
        assert_eq!(openapi_path("/kv/{*key}"), "/kv/{key}");
    }

    #[tokio::test]
    async fn the_handler_serves_the_document() {
        let r = handler().await;
        assert_eq!(r.status(), axum::http::StatusCode::OK);
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
        let body = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .expect("body");
        assert_eq!(body, SPEC.as_bytes());
    }
}
