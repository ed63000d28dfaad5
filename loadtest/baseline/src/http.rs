//! HTTP routes: the WebSocket upgrade on `/ws`, `POST /api/publish` and `GET /healthz`.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use crate::hub::Hub;

type Resp = Response<Full<Bytes>>;

fn reply(status: StatusCode, body: &'static str) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// The WebSocket settings: tungstenite's defaults with a read buffer of `read_buffer` bytes
/// (0: tungstenite's default, 128 KiB).
pub fn ws_config(read_buffer: usize) -> Option<WebSocketConfig> {
    (read_buffer > 0).then(|| WebSocketConfig::default().read_buffer_size(read_buffer))
}

pub async fn handle(
    req: Request<Incoming>,
    hub: Arc<Hub>,
    ws_config: Option<WebSocketConfig>,
) -> Result<Resp, Infallible> {
    Ok(match (req.method(), req.uri().path()) {
        (_, "/ws") => upgrade(req, hub, ws_config),
        (&Method::POST, "/api/publish") => publish(req, &hub).await,
        (&Method::GET, "/healthz") => reply(StatusCode::OK, r#"{"status":"ok"}"#),
        (_, "/api/publish" | "/healthz") => reply(StatusCode::METHOD_NOT_ALLOWED, "{}"),
        _ => reply(StatusCode::NOT_FOUND, "{}"),
    })
}

fn header_has(req: &Request<Incoming>, name: header::HeaderName, token: &str) -> bool {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// `GET /ws?subscribe=a,b`: answers 101 and hands the upgraded connection to a new task.
fn upgrade(mut req: Request<Incoming>, hub: Arc<Hub>, ws_config: Option<WebSocketConfig>) -> Resp {
    if !header_has(&req, header::UPGRADE, "websocket") {
        let mut resp = reply(StatusCode::UPGRADE_REQUIRED, "{}");
        resp.headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        return resp;
    }
    let key = req.headers().get(header::SEC_WEBSOCKET_KEY);
    let version_ok = req
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        == Some(b"13".as_slice());
    let (Some(key), true, &Method::GET) = (key, version_ok, req.method()) else {
        return reply(StatusCode::BAD_REQUEST, "{}");
    };
    let accept = derive_accept_key(key.as_bytes());

    let mut channels = Vec::new();
    for (name, value) in form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
        if name == "subscribe" {
            channels.extend(
                value
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_owned),
            );
        }
    }

    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        // tokio-tungstenite with its default WebSocketConfig apart from the read buffer.
        let ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, ws_config).await;
        crate::ws::run(ws, hub, channels).await;
    });

    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = resp.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("base64 is a valid header value"),
    );
    resp
}

#[derive(Deserialize)]
struct Publish<'a> {
    channel: String,
    #[serde(borrow)]
    data: &'a RawValue,
}

/// `POST /api/publish {"channel":"a","data":…}`: a string `data` is published as its text, any
/// other JSON value as its exact JSON text.
async fn publish(req: Request<Incoming>, hub: &Hub) -> Resp {
    let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
        return reply(StatusCode::BAD_REQUEST, r#"{"error":"cannot read body"}"#);
    };
    let Ok(publish) = serde_json::from_slice::<Publish>(&body) else {
        return reply(StatusCode::BAD_REQUEST, r#"{"error":"bad request"}"#);
    };
    if publish.channel.is_empty() {
        return reply(StatusCode::BAD_REQUEST, r#"{"error":"empty channel"}"#);
    }
    let raw = publish.data.get();
    let payload = if raw.starts_with('"') {
        serde_json::from_str::<String>(raw)
            .expect("a JSON string decodes")
            .into_bytes()
    } else {
        raw.as_bytes().to_vec()
    };
    match hub.publish(&publish.channel, &payload).await {
        Ok(()) => reply(StatusCode::OK, r#"{"ok":true}"#),
        Err(_) => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"error":"redis unavailable"}"#,
        ),
    }
}
