//! Requests to a gateway, the same for a gateway on a socket (through
//! reqwest) and one in memory (through `tower::ServiceExt::oneshot`, no
//! socket and no broker), so a test reads the same against either.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use base64::Engine as _;
use hookmesh_gateway::broker::StoredEvent;
use hookmesh_gateway::{Gateway, GatewayConfig, GatewayMetrics, MemoryBroker};
use prometheus_client::registry::Registry;
use tower::ServiceExt as _;

/// Something requests can be sent to.
pub trait TestClient {
    /// A request to `path` with `method`.
    fn request(&self, method: Method, path: &str) -> Call;

    /// A JSON POST to `path` with `body` as the exact bytes sent.
    fn post(&self, path: &str, body: &[u8]) -> Call {
        self.request(Method::POST, path)
            .header("content-type", "application/json")
            .body(body.to_vec())
    }

    fn get(&self, path: &str) -> Call {
        self.request(Method::GET, path)
    }

    /// `GET path`: its status and JSON body.
    fn get_json(
        &self,
        path: &str,
    ) -> impl std::future::Future<Output = (StatusCode, serde_json::Value)> + Send {
        let call = self.get(path);
        async move {
            let answer = call.send().await.expect("infallible");
            let status = answer.status();
            (status, answer.json().await.expect("a JSON body"))
        }
    }

    /// `GET path` and its body as text.
    fn get_text(&self, path: &str) -> impl std::future::Future<Output = String> + Send {
        let call = self.get(path);
        async move {
            let answer = call.send().await.expect("infallible");
            answer.text().await.expect("a text body")
        }
    }
}

/// A request being built.
#[derive(Debug)]
pub struct Call {
    to: Target,
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

#[derive(Debug, Clone)]
enum Target {
    Http {
        client: reqwest::Client,
        base_url: String,
    },
    Memory(axum::Router),
}

impl Call {
    /// Adds header `name` (as reqwest does: a repeated name is appended).
    pub fn header(mut self, name: impl AsRef<str>, value: impl AsRef<str>) -> Self {
        self.headers.append(
            HeaderName::from_bytes(name.as_ref().as_bytes()).expect("a header name"),
            HeaderValue::from_str(value.as_ref()).expect("a header value"),
        );
        self
    }

    /// Sets header `name`, replacing earlier values.
    pub fn replace_header(mut self, name: &str, value: &str) -> Self {
        self.headers.insert(
            HeaderName::from_bytes(name.as_bytes()).expect("a header name"),
            HeaderValue::from_str(value).expect("a header value"),
        );
        self
    }

    pub fn remove_header(mut self, name: &str) -> Self {
        self.headers.remove(name);
        self
    }

    pub fn bearer_auth(self, token: &str) -> Self {
        self.header("authorization", format!("Bearer {token}"))
    }

    pub fn basic_auth(self, user: &str, password: Option<&str>) -> Self {
        let credentials = format!("{user}:{}", password.unwrap_or(""));
        let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
        self.header("authorization", format!("Basic {encoded}"))
    }

    /// The same request, to send again later exactly as it is (the same
    /// signature and timestamp).
    pub fn try_clone_for_resend(&self) -> Self {
        Self {
            to: self.to.clone(),
            method: self.method.clone(),
            path: self.path.clone(),
            headers: self.headers.clone(),
            body: self.body.clone(),
        }
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sends it; the answer, whatever its status.
    pub async fn send(self) -> Result<Answer, Infallible> {
        Ok(match self.to {
            Target::Http { client, base_url } => {
                let response = client
                    .request(self.method, format!("{base_url}{}", self.path))
                    .headers(self.headers)
                    .body(self.body)
                    .send()
                    .await
                    .expect("the gateway answers");
                Answer {
                    status: response.status(),
                    headers: response.headers().clone(),
                    body: response.bytes().await.expect("a whole body"),
                }
            }
            Target::Memory(router) => {
                let mut request = Request::builder()
                    .method(self.method)
                    .uri(&self.path)
                    .body(Body::from(self.body))
                    .expect("a valid request");
                *request.headers_mut() = self.headers;
                let response = router.oneshot(request).await.expect("routers never fail");
                let (parts, body) = response.into_parts();
                Answer {
                    status: parts.status,
                    headers: parts.headers,
                    body: axum::body::to_bytes(body, usize::MAX)
                        .await
                        .expect("a whole body"),
                }
            }
        })
    }
}

/// A response, read whole.
#[derive(Debug, Clone)]
pub struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    pub fn bytes(&self) -> &Bytes {
        &self.body
    }

    pub async fn json<T: serde::de::DeserializeOwned>(self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    pub async fn text(self) -> Result<String, std::string::FromUtf8Error> {
        String::from_utf8(self.body.to_vec())
    }
}

impl TestClient for crate::TestGateway {
    fn request(&self, method: Method, path: &str) -> Call {
        Call {
            to: Target::Http {
                client: self.http.clone(),
                base_url: self.base_url.clone(),
            },
            method,
            path: path.to_owned(),
            headers: HeaderMap::new(),
            body: Vec::new(),
        }
    }
}

/// A gateway over a broker in memory, answering without a socket.
#[derive(Debug)]
pub struct MemoryGateway {
    pub gateway: Gateway,
    pub broker: Arc<MemoryBroker>,
    router: axum::Router,
}

impl MemoryGateway {
    pub fn new(config: GatewayConfig) -> Self {
        let mut registry = Registry::default();
        let metrics = GatewayMetrics::register(&mut registry);
        let broker = MemoryBroker::new();
        let gateway = Gateway::new(config, broker.clone(), metrics, Arc::new(registry));
        Self {
            router: gateway.router(),
            gateway,
            broker,
        }
    }

    /// Everything published so far.
    pub fn stored(&self) -> Vec<StoredEvent> {
        self.broker.stored()
    }
}

impl TestClient for MemoryGateway {
    fn request(&self, method: Method, path: &str) -> Call {
        Call {
            to: Target::Memory(self.router.clone()),
            method,
            path: path.to_owned(),
            headers: HeaderMap::new(),
            body: Vec::new(),
        }
    }
}
