//! A two-service demo for HTTP experiments: a `checkout` service that
//! depends on an `inventory` service, and degrades the way a team wants to
//! prove it does when inventory is partitioned away: `503` with
//! `Retry-After` at once, instead of hanging.
//!
//! ```sh
//! cargo run --example checkout_demo -- inventory --listen 127.0.0.1:7001
//! cargo run --example checkout_demo -- checkout --listen 127.0.0.1:7000 \
//!     --inventory http://127.0.0.1:7101 --timeout 500ms   # 7101: a shakedown http proxy
//! curl -si -X POST http://127.0.0.1:7000/checkout -d '{"sku":"tea"}'
//! ```
//!
//! - `inventory`: `GET /inventory/{sku}` answers
//!   `{"sku": "...", "available": N}`; anything else is 404.
//! - `checkout`: `POST /checkout` (body `{"sku": "..."}`, default `tea`)
//!   asks inventory with the `--timeout`; on success `200
//!   {"status":"confirmed",...}`; on a 5xx, a connection error or the
//!   timeout, `503` with `Retry-After: 5` and `{"error": "inventory
//!   unavailable", "cause": "..."}`.
//!
//! Both print `listening on ADDR` on stdout once bound, so a test or a
//! script can use port 0 and read the address.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// Largest request body read (a checkout request is a few bytes).
const MAX_BODY: usize = 64 * 1024;

#[derive(Parser)]
#[command(about = "checkout + inventory demo services for shakedown experiments")]
struct Cli {
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand)]
enum Role {
    /// Answers GET /inventory/{sku}.
    Inventory {
        /// Address to listen on (port 0 picks one).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
    },
    /// Answers POST /checkout by asking inventory.
    Checkout {
        /// Address to listen on (port 0 picks one).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        /// Base URL of inventory (e.g. a shakedown http proxy in front of it).
        #[arg(long)]
        inventory: String,
        /// How long to wait for inventory before answering 503.
        #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
}

type Body = Full<Bytes>;

fn json(status: StatusCode, value: serde_json::Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(value.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

async fn inventory(req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    match (req.method(), path.strip_prefix("/inventory/")) {
        (&Method::GET, Some(sku)) if !sku.is_empty() && !sku.contains('/') => {
            // A stable, made-up stock level per SKU.
            let available = sku.bytes().map(u64::from).sum::<u64>() % 50 + 1;
            json(
                StatusCode::OK,
                serde_json::json!({"sku": sku, "available": available}),
            )
        }
        _ => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": "not found"}),
        ),
    }
}

struct Checkout {
    client: Client<HttpConnector, Body>,
    inventory: String,
    timeout: Duration,
}

fn unavailable(cause: String) -> Response<Body> {
    let mut r = json(
        StatusCode::SERVICE_UNAVAILABLE,
        serde_json::json!({"error": "inventory unavailable", "retry_after": 5, "cause": cause}),
    );
    r.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("5"));
    r
}

async fn checkout(state: Arc<Checkout>, req: Request<Incoming>) -> Response<Body> {
    if req.method() != Method::POST || req.uri().path() != "/checkout" {
        return json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": "not found"}),
        );
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return json(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"error": format!("bad body: {e}")}),
            );
        }
    };
    let sku = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("sku").and_then(|s| s.as_str()).map(str::to_string))
        .filter(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        .unwrap_or_else(|| "tea".to_string());
    let uri: Uri =
        match format!("{}/inventory/{sku}", state.inventory.trim_end_matches('/')).parse() {
            Ok(u) => u,
            Err(e) => return unavailable(format!("bad inventory URL: {e}")),
        };
    let ask = async {
        let resp = state
            .client
            .get(uri)
            .await
            .map_err(|e| format!("inventory unreachable: {e}"))?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("inventory body failed: {e}"))?
            .to_bytes();
        if status.is_server_error() {
            return Err(format!("inventory answered {status}"));
        }
        let value: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| format!("inventory sent bad JSON ({status}): {e}"))?;
        Ok((status, value))
    };
    match tokio::time::timeout(state.timeout, ask).await {
        Err(_) => unavailable(format!(
            "inventory did not answer within {}",
            humantime::format_duration(state.timeout)
        )),
        Ok(Err(cause)) => unavailable(cause),
        Ok(Ok((status, stock))) if status.is_success() => json(
            StatusCode::OK,
            serde_json::json!({"status": "confirmed", "sku": sku, "available": stock["available"]}),
        ),
        Ok(Ok((status, _))) => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": format!("unknown sku ({status})"), "sku": sku}),
        ),
    }
}

async fn serve<F, Fut>(listener: TcpListener, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Response<Body>> + Send + 'static,
{
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let handler = handler.clone();
                async move { Ok::<_, Infallible>(handler(req).await) }
            });
            if let Err(e) = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                eprintln!("connection failed: {e}");
            }
        });
    }
}

async fn bind(listen: &str) -> Result<(TcpListener, SocketAddr), String> {
    let l = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    println!("listening on {addr}");
    let _ = std::io::stdout().flush();
    Ok((l, addr))
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let run = async {
        match cli.role {
            Role::Inventory { listen } => {
                let (l, _) = bind(&listen).await?;
                serve(l, inventory).await;
            }
            Role::Checkout {
                listen,
                inventory,
                timeout,
            } => {
                let mut connector = HttpConnector::new();
                connector.set_nodelay(true);
                connector.set_connect_timeout(Some(timeout));
                let state = Arc::new(Checkout {
                    client: Client::builder(TokioExecutor::new()).build(connector),
                    inventory,
                    timeout,
                });
                let (l, _) = bind(&listen).await?;
                serve(l, move |req| checkout(state.clone(), req)).await;
            }
        }
        Ok::<(), String>(())
    };
    if let Err(e) = run.await {
        eprintln!("checkout_demo: {e}");
        std::process::exit(1);
    }
}
