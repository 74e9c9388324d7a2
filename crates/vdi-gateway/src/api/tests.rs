use super::*;
use axum::http::HeaderValue;

#[test]
fn tokens_come_from_all_three_headers() {
    let mut h = HeaderMap::new();
    h.insert("api_key", HeaderValue::from_static("AAAAAAAAAAAAAAAA"));
    h.insert("cli_key", HeaderValue::from_static("BBBBBBBBBBBBBBBB"));
    h.append(
        axum::http::header::AUTHORIZATION,
        HeaderValue::from_static("Bearer CCCCCCCCCCCCCCCC "),
    );
    h.append(
        axum::http::header::AUTHORIZATION,
        HeaderValue::from_static("Basic DDDD"),
    );
    let tokens: Vec<&[u8]> = presented_tokens(&h);
    assert_eq!(
        tokens,
        [
            b"AAAAAAAAAAAAAAAA".as_slice(),
            b"BBBBBBBBBBBBBBBB",
            b"CCCCCCCCCCCCCCCC"
        ]
    );
    assert!(presented_tokens(&HeaderMap::new()).is_empty());
}

#[test]
fn every_error_has_the_one_shape() {
    let errors = [
        ApiError::Unauthorized("u".into()),
        ApiError::Forbidden("f".into()),
        ApiError::TargetNotAllowed("t".into()),
        ApiError::NotFound("n".into()),
        ApiError::BadRequest("b".into()),
        ApiError::InvalidSettings(vec![FieldError::new(
            "api_port",
            "0 is out of range 1..=65535",
        )]),
        ApiError::Unresolvable("r".into()),
        ApiError::Conflict("c".into()),
        ApiError::Disabled("d".into()),
        ApiError::NoFreePort("p".into()),
        ApiError::StreamLimit("s".into()),
        ApiError::MethodNotAllowed("m".into()),
        ApiError::Internal("i".into()),
    ];
    let shapes: Vec<(u16, Value)> = errors
        .into_iter()
        .map(|e| {
            let body = serde_json::to_value(e.body()).unwrap();
            (e.into_response().status().as_u16(), body)
        })
        .collect();
    insta::assert_json_snapshot!(shapes);
}

#[test]
fn openapi_document_is_stable() {
    let doc = serde_json::to_value(openapi()).unwrap();
    let mut paths: Vec<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    paths.sort();
    insta::assert_json_snapshot!(paths);
}
