//! HTTP clients for calls out of the mesh (the Trading API, incoming
//! webhooks), with TLS through rustls and ring, the one crypto provider the
//! binary carries, checked against the system's root certificates.

use std::sync::Once;

/// A client builder with the crypto provider in place.
pub fn client_builder() -> reqwest::ClientBuilder {
    static PROVIDER: Once = Once::new();
    PROVIDER.call_once(|| {
        // Another part of the process may have installed it first.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
}
