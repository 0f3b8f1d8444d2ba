//! The CloudEvents 1.0 envelope every message on the mesh travels in.
//!
//! Structured-mode JSON: the context attributes and the payload in one
//! document, plus the `tenantid` extension. The gateway builds envelopes with
//! [`Envelope::new`]; consumers and native publishers' messages go through the
//! strict [`Envelope::parse`] and then [`Envelope::data_as`], which run the
//! same payload checks as the gateway.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::tenant::{TenantId, tenant_id};
use crate::timestamp::Timestamp;
use crate::validation::{Object, ValidationErrors, parse_json, string, timestamp};

/// The only CloudEvents version the mesh speaks.
pub const SPEC_VERSION: &str = "1.0";
/// Every payload is JSON.
pub const DATA_CONTENT_TYPE: &str = "application/json";
/// `Content-Type` of a structured-mode CloudEvent (the NATS protocol binding).
pub const CLOUDEVENTS_CONTENT_TYPE: &str = "application/cloudevents+json";
const SCHEMA_URI_PREFIX: &str = "urn:hookmesh:schema:";

/// Names a payload schema and its version; appears as the envelope's
/// `dataschema` (`urn:hookmesh:schema:ci.pipeline:v1`) and as the file
/// `contracts/schemas/ci.pipeline.v1.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SchemaId {
    pub name: &'static str,
    pub version: u32,
}

impl SchemaId {
    pub const fn new(name: &'static str, version: u32) -> Self {
        Self { name, version }
    }

    pub fn uri(self) -> String {
        format!("{SCHEMA_URI_PREFIX}{}:v{}", self.name, self.version)
    }

    pub fn file_name(self) -> String {
        format!("{}.v{}.json", self.name, self.version)
    }

    /// Splits a `dataschema` URI into its schema name and version.
    pub fn parse_uri(uri: &str) -> Option<(&str, u32)> {
        let rest = uri.strip_prefix(SCHEMA_URI_PREFIX)?;
        let (name, version) = rest.rsplit_once(":v")?;
        let version = version.parse().ok()?;
        (!name.is_empty()).then_some((name, version))
    }
}

/// A payload that can travel in an [`Envelope`].
pub trait EventData: Sized + Serialize + schemars::JsonSchema {
    /// The schema (and version) this type implements.
    const SCHEMA: SchemaId;

    /// Reads the payload from JSON, reporting every invalid field.
    fn parse(value: &Value) -> Result<Self, ValidationErrors>;

    /// The CloudEvents `type` of this payload.
    fn event_type(&self) -> &'static str;
}

/// A CloudEvents 1.0 structured-mode event with the `tenantid` extension.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Envelope<D> {
    /// Always `1.0`.
    pub specversion: String,
    /// Unique per event within `source`; a redelivered event keeps its id.
    pub id: String,
    /// Where the event entered the mesh (`/webhooks/ci/github`).
    pub source: String,
    /// What happened (`ci.pipeline.failed`).
    #[serde(rename = "type")]
    pub event_type: String,
    /// When it happened, according to its producer.
    pub time: Timestamp,
    /// What it happened to (a job, match or repository id), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Always `application/json`.
    pub datacontenttype: String,
    /// The payload's schema and version (`urn:hookmesh:schema:ci.pipeline:v1`).
    pub dataschema: String,
    /// The tenant the event belongs to.
    pub tenantid: TenantId,
    /// The payload.
    pub data: D,
}

impl<D: EventData> Envelope<D> {
    pub fn new(
        id: impl Into<String>,
        source: impl Into<String>,
        time: Timestamp,
        tenant: TenantId,
        subject: Option<String>,
        data: D,
    ) -> Self {
        Self {
            specversion: SPEC_VERSION.to_owned(),
            id: id.into(),
            source: source.into(),
            event_type: data.event_type().to_owned(),
            time,
            subject,
            datacontenttype: DATA_CONTENT_TYPE.to_owned(),
            dataschema: D::SCHEMA.uri(),
            tenantid: tenant,
            data,
        }
    }

    /// The structured-mode JSON of this event.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("contract types always serialise")
    }
}

impl Envelope<Value> {
    /// Reads an envelope from the wire, checking every context attribute.
    /// The payload is checked by [`Envelope::data_as`].
    pub fn parse(bytes: &[u8]) -> Result<Self, ValidationErrors> {
        let document = parse_json(bytes)?;
        let mut errors = ValidationErrors::new();
        let envelope = (|| {
            let mut o = Object::open(&document, "", &mut errors)?;
            let specversion = o.required("specversion", |v| match v.as_str() {
                Some(SPEC_VERSION) => Ok(SPEC_VERSION.to_owned()),
                _ => Err(format!("must be {SPEC_VERSION:?}, not {v}")),
            });
            let id = o.required("id", string(1, 256));
            let source = o.required("source", |v| {
                let source = string(1, 1024)(v)?;
                if source.chars().any(char::is_whitespace) {
                    return Err("must be a URI-reference without whitespace".to_owned());
                }
                Ok(source)
            });
            let event_type = o.required("type", string(1, 256));
            let time = o.required("time", timestamp);
            let subject = o.optional("subject", string(1, 256));
            let datacontenttype = o.optional("datacontenttype", |v| match v.as_str() {
                Some(DATA_CONTENT_TYPE) => Ok(DATA_CONTENT_TYPE.to_owned()),
                _ => Err(format!("must be {DATA_CONTENT_TYPE:?}, not {v}")),
            });
            let dataschema = o.required("dataschema", |v| {
                let uri = string(1, 256)(v)?;
                SchemaId::parse_uri(&uri).ok_or_else(|| {
                    format!(
                        "must be a hookmesh schema URI such as {:?}, not {uri:?}",
                        SchemaId::new("ci.pipeline", 1).uri()
                    )
                })?;
                Ok(uri)
            });
            let tenantid = o.required("tenantid", tenant_id);
            let data = o.raw("data").cloned();
            if data.is_none() {
                o.refine("data", false, "is required");
            }
            Some(Envelope {
                specversion: specversion?,
                id: id?,
                source: source?,
                event_type: event_type?,
                time: time?,
                subject: subject?,
                datacontenttype: datacontenttype?.unwrap_or_else(|| DATA_CONTENT_TYPE.to_owned()),
                dataschema: dataschema?,
                tenantid: tenantid?,
                data: data?,
            })
        })();
        errors.finish(envelope)
    }

    /// Reads the payload as `D`: the `dataschema` must name `D`'s schema and
    /// version, the payload must pass `D`'s checks, and `type` must agree.
    pub fn data_as<D: EventData>(&self) -> Result<D, ValidationErrors> {
        match SchemaId::parse_uri(&self.dataschema) {
            Some((name, version)) if name == D::SCHEMA.name && version == D::SCHEMA.version => {}
            Some((name, version)) if name == D::SCHEMA.name => {
                return Err(ValidationErrors::single(
                    "dataschema",
                    format!(
                        "schema version {version} of {name} is not supported (supported: {})",
                        D::SCHEMA.version
                    ),
                ));
            }
            _ => {
                return Err(ValidationErrors::single(
                    "dataschema",
                    format!("must be {:?}, not {:?}", D::SCHEMA.uri(), self.dataschema),
                ));
            }
        }
        let data = D::parse(&self.data).map_err(|errors| errors.prefixed("data"))?;
        if data.event_type() != self.event_type {
            return Err(ValidationErrors::single(
                "type",
                format!(
                    "is {:?} but the payload describes {:?}",
                    self.event_type,
                    data.event_type()
                ),
            ));
        }
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn schema_uris_round_trip() {
        let id = SchemaId::new("buddy.match.created", 2);
        assert_eq!(id.uri(), "urn:hookmesh:schema:buddy.match.created:v2");
        assert_eq!(
            SchemaId::parse_uri(&id.uri()),
            Some(("buddy.match.created", 2))
        );
        assert_eq!(SchemaId::parse_uri("https://example.com/x.json"), None);
        assert_eq!(SchemaId::parse_uri("urn:hookmesh:schema:x:vtwo"), None);
    }

    #[test]
    fn a_broken_envelope_names_every_attribute_at_fault() {
        let body = json!({
            "specversion": "0.3",
            "id": "",
            "source": "has space",
            "time": "later",
            "dataschema": "nope",
            "tenantid": "a.b"
        });
        let errors = Envelope::parse(body.to_string().as_bytes()).unwrap_err();
        let fields: Vec<_> = errors.errors().iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "specversion",
                "id",
                "source",
                "type",
                "time",
                "dataschema",
                "tenantid",
                "data"
            ]
        );
    }

    #[test]
    fn malformed_json_is_refused_as_a_whole() {
        let errors = Envelope::parse(b"{not json").unwrap_err();
        assert_eq!(errors.errors()[0].field, "");
        assert!(errors.errors()[0].message.contains("line 1"));
    }
}
