//! HTTP clients for calls out of the mesh (the Trading API, incoming
//! webhooks), with TLS through rustls and ring, the one crypto provider the
//! binary carries, checked against the system's root certificates.

use std::sync::Once;

/// A client builder with the crypto provider in place, following no
/// redirects: a redirect would carry the request's credentials (an API key,
/// a callback token, a login) to wherever it points, so it is answered as
/// it came, and callers refuse it with a clear error ([`refused_redirect`]).
pub fn client_builder() -> reqwest::ClientBuilder {
    install_crypto_provider();
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none())
}

/// Puts ring in place as rustls' crypto provider, once; every reqwest
/// client of the process (the trace exporter's too) needs it first.
pub fn install_crypto_provider() {
    static PROVIDER: Once = Once::new();
    PROVIDER.call_once(|| {
        // Another part of the process may have installed it first.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Why a 3xx answer is refused, naming where it pointed (without
/// credentials), or `None` when `response` is no redirect.
pub fn refused_redirect(response: &reqwest::Response) -> Option<String> {
    if !response.status().is_redirection() {
        return None;
    }
    let location = response
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|value| value.to_str().ok())
        .map_or_else(|| "nowhere".to_owned(), hookmesh_contracts::redact::url);
    Some(format!(
        "it answered {} redirecting to {location}; redirects are not followed, so that no \
         credential reaches another address: configure the final address",
        response.status().as_u16()
    ))
}
