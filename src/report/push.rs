//! Pushing a run's final figures to a Prometheus Pushgateway.
//!
//! A run is a batch job: nothing is left to scrape when it ends, so its
//! figures ([`super::prom::text`]) are pushed with `PUT`, which replaces
//! every metric of the group `job="shakedown", experiment="<name>"`. The
//! grouping key goes in the path (`/metrics/job/shakedown/experiment/…`),
//! percent-encoded, or in Pushgateway's base64 form when the name holds a
//! `/` or is empty, which a plain path segment cannot carry.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::header::CONTENT_TYPE;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::experiment::result::RunResult;

/// The whole push (connect, send, answer) must finish in this time: the
/// run is over and its exit code should not wait on a slow gateway.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The text exposition format Pushgateway reads.
const EXPOSITION: &str = "text/plain; version=0.0.4";
/// How much of an error answer's body is quoted in the error.
const BODY_QUOTE: usize = 200;

/// URL-safe base64 (RFC 4648 §5) with padding, as Pushgateway accepts in
/// `label@base64/value` path segments.
fn base64url(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One `label/value` pair of a grouping key. An empty value is `=` in
/// the base64 form, as Pushgateway documents.
fn grouping(label: &str, value: &str) -> String {
    if value.is_empty() {
        format!("{label}@base64/=")
    } else if value.contains('/') {
        format!("{label}@base64/{}", base64url(value.as_bytes()))
    } else {
        format!("{label}/{}", percent_encode(value))
    }
}

/// The URL a run is pushed to: `{gateway}/metrics/job/shakedown/experiment/{name}`.
/// Only `http://` gateways (this build has no TLS client).
pub fn url(gateway: &str, experiment: &str) -> Result<String, String> {
    let base = gateway.trim_end_matches('/');
    let url = format!(
        "{base}/metrics/job/shakedown/{}",
        grouping("experiment", experiment)
    );
    crate::http::client_uri(&url).map_err(|e| format!("pushgateway `{gateway}`: {e}"))?;
    Ok(url)
}

/// Pushes the final figures to a Pushgateway (`PUT`, replacing the
/// experiment's group). A non-2xx answer is an error naming the status and
/// the start of the body.
pub async fn push(r: &RunResult, gateway: &str) -> Result<(), String> {
    let url = url(gateway, &r.experiment)?;
    let body = super::prom::text(r);
    match tokio::time::timeout(TIMEOUT, send(&url, body)).await {
        Ok(res) => res,
        Err(_) => Err(format!("no answer from {url} within {TIMEOUT:?}")),
    }
}

async fn send(url: &str, body: String) -> Result<(), String> {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(TIMEOUT));
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let req = Request::put(url)
        .header(CONTENT_TYPE, EXPOSITION)
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("cannot build a request for {url}: {e}"))?;
    let resp = client
        .request(req)
        .await
        .map_err(|e| format!("PUT {url} failed: {}", causes(&e)))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    // Read just enough of the body to quote it.
    let mut body = resp.into_body();
    let mut quoted: Vec<u8> = Vec::new();
    while quoted.len() < BODY_QUOTE {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    quoted.extend_from_slice(data);
                }
            }
            _ => break,
        }
    }
    quoted.truncate(BODY_QUOTE);
    let text = String::from_utf8_lossy(&quoted);
    Err(format!(
        "PUT {url}: the pushgateway answered {status}: {}",
        text.trim()
    ))
}

/// An error and its sources, on one line.
fn causes(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body_util::BodyExt;
    use hyper::body::Incoming;
    use hyper::service::service_fn;
    use hyper::{Response, StatusCode};
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    use super::*;
    use crate::report::fixtures;

    /// What the test gateway saw.
    #[derive(Debug)]
    struct Seen {
        method: String,
        path: String,
        content_type: String,
        body: String,
    }

    /// A one-route gateway on port 0 answering `status` and `answer`;
    /// returns its base URL and the requests it saw.
    async fn gateway(status: StatusCode, answer: &'static str) -> (String, mpsc::Receiver<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let tx = tx.clone();
                        async move {
                            let method = req.method().to_string();
                            let path = req.uri().path().to_string();
                            let content_type = req
                                .headers()
                                .get(CONTENT_TYPE)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_string();
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
                                .unwrap_or_default();
                            let _ = tx
                                .send(Seen {
                                    method,
                                    path,
                                    content_type,
                                    body,
                                })
                                .await;
                            let mut resp = Response::new(Full::new(Bytes::from(answer)));
                            *resp.status_mut() = status;
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        (format!("http://{addr}"), rx)
    }

    #[test]
    fn base64url_matches_rfc4648() {
        assert_eq!(base64url(b""), "");
        assert_eq!(base64url(b"f"), "Zg==");
        assert_eq!(base64url(b"fo"), "Zm8=");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(b"foobar"), "Zm9vYmFy");
        // Pushgateway's own example.
        assert_eq!(base64url(b"/var/tmp"), "L3Zhci90bXA=");
        // The URL-safe alphabet: 0xfb 0xff -> "-_8=".
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8=");
    }

    #[test]
    fn grouping_key_paths() {
        let base = "http://gw:9091/metrics/job/shakedown/experiment";
        assert_eq!(
            url("http://gw:9091", "slow-db").as_deref(),
            Ok(&*format!("{base}/slow-db"))
        );
        assert_eq!(
            url("http://gw:9091/", "a b&c").as_deref(),
            Ok(&*format!("{base}/a%20b%26c"))
        );
        assert_eq!(
            url("http://gw:9091", "a/b").as_deref(),
            Ok("http://gw:9091/metrics/job/shakedown/experiment@base64/YS9i")
        );
        assert_eq!(
            url("http://gw:9091", "").as_deref(),
            Ok("http://gw:9091/metrics/job/shakedown/experiment@base64/=")
        );
        assert_eq!(
            url("http://gw:9091", "é").as_deref(),
            Ok(&*format!("{base}/%C3%A9"))
        );
        assert!(url("https://gw:9091", "x").is_err());
        assert!(url("gw:9091", "x").is_err());
    }

    #[tokio::test]
    async fn pushes_with_put_to_the_grouping_key() {
        let (gw, mut seen) = gateway(StatusCode::OK, "").await;
        let mut r = fixtures::violated();
        r.experiment = "slow primary/replica".into();
        push(&r, &gw).await.expect("push");
        let s = seen.recv().await.expect("a request");
        assert_eq!(s.method, "PUT");
        assert_eq!(
            s.path,
            format!(
                "/metrics/job/shakedown/experiment@base64/{}",
                base64url(b"slow primary/replica")
            )
        );
        assert_eq!(s.content_type, "text/plain; version=0.0.4");
        assert!(
            s.body.contains(
                "shakedown_experiment_verdict{experiment=\"slow primary/replica\",verdict=\"violated\"} 1"
            ),
            "{}",
            s.body
        );
        assert!(
            s.body
                .contains("shakedown_experiment_exit_code{experiment=\"slow primary/replica\"} 1")
        );
    }

    #[tokio::test]
    async fn an_error_answer_names_status_and_body() {
        let long: &'static str =
            Box::leak(format!("bad metrics {}", "x".repeat(500)).into_boxed_str());
        let (gw, mut seen) = gateway(StatusCode::BAD_REQUEST, long).await;
        let e = push(&fixtures::passed(), &gw)
            .await
            .expect_err("400 is an error");
        assert!(e.contains("400 Bad Request"), "{e}");
        assert!(e.contains("bad metrics xxx"), "{e}");
        assert!(e.len() < 200 + 150, "body quoted to 200 bytes: {}", e.len());
        assert!(seen.recv().await.is_some());
    }

    #[tokio::test]
    async fn an_unreachable_gateway_is_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let e = push(&fixtures::passed(), &format!("http://{addr}"))
            .await
            .expect_err("nobody listens");
        assert!(e.contains("PUT http://"), "{e}");
    }
}
