//! Field-by-field parsing that reports every invalid field at once.
//!
//! serde stops at the first error; a webhook producer fixing a payload wants
//! all of them. Each contract type therefore reads its JSON through an
//! [`Object`], which records a [`FieldError`] for every missing or invalid
//! field (with its path, `fast_range[1]` or `data.rating`) and keeps going.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::timestamp::Timestamp;

/// One refused field: where it is and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FieldError {
    /// Path of the field in the document (`ticker`, `fast_range[1]`,
    /// `data.rating`, `[3].message_id`); empty for the document itself.
    pub field: String,
    /// Why the value was refused.
    pub message: String,
}

/// Every reason a document was refused, in document order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidationErrors(Vec<FieldError>);

impl ValidationErrors {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn single(field: impl Into<String>, message: impl Into<String>) -> Self {
        let mut errors = Self::new();
        errors.push(field, message);
        errors
    }

    pub fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn errors(&self) -> &[FieldError] {
        &self.0
    }

    pub fn into_errors(self) -> Vec<FieldError> {
        self.0
    }

    /// Re-roots these errors under `prefix`, so `rating` becomes `data.rating`.
    pub fn prefixed(self, prefix: &str) -> Self {
        Self(
            self.0
                .into_iter()
                .map(|error| FieldError {
                    field: if error.field.is_empty() {
                        prefix.to_owned()
                    } else if error.field.starts_with('[') {
                        format!("{prefix}{}", error.field)
                    } else {
                        join_path(prefix, &error.field)
                    },
                    message: error.message,
                })
                .collect(),
        )
    }

    /// `Ok(value)` when nothing was recorded, the errors otherwise.
    pub fn finish<T>(self, value: Option<T>) -> Result<T, Self> {
        match value {
            Some(value) if self.is_empty() => Ok(value),
            _ if self.is_empty() => Err(Self::single("", "is invalid")),
            _ => Err(self),
        }
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            if error.field.is_empty() {
                f.write_str(&error.message)?;
            } else {
                write!(f, "{}: {}", error.field, error.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// `prefix.key`, or `key` at the root.
pub fn join_path(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

/// `prefix[index]`.
pub fn index_path(prefix: &str, index: usize) -> String {
    format!("{prefix}[{index}]")
}

/// Parses a whole JSON document, reporting a syntax error as a refusal of the
/// document itself (with serde's line and column).
pub fn parse_json(bytes: &[u8]) -> Result<Value, ValidationErrors> {
    serde_json::from_slice(bytes).map_err(|error| ValidationErrors::single("", error.to_string()))
}

/// A JSON object being read field by field; errors accumulate in a shared list.
#[derive(Debug)]
pub struct Object<'a> {
    map: &'a Map<String, Value>,
    path: String,
    errors: &'a mut ValidationErrors,
}

impl<'a> Object<'a> {
    /// Opens `value` as an object at `path`, or records why it is not one.
    pub fn open(value: &'a Value, path: &str, errors: &'a mut ValidationErrors) -> Option<Self> {
        match value {
            Value::Object(map) => Some(Self {
                map,
                path: path.to_owned(),
                errors,
            }),
            other => {
                errors.push(
                    path,
                    format!("must be a JSON object, not {}", kind_of(other)),
                );
                None
            }
        }
    }

    pub fn path_of(&self, key: &str) -> String {
        join_path(&self.path, key)
    }

    /// The raw value of `key`, if present and not null.
    pub fn raw(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|value| !value.is_null())
    }

    /// A required field read by a leaf parser. The field's path is only
    /// spelled out for an error: every event of a batch is read this way.
    pub fn required<T>(
        &mut self,
        key: &str,
        parse: impl FnOnce(&Value) -> Result<T, String>,
    ) -> Option<T> {
        match self.raw(key) {
            None => {
                self.refuse(key, "is required");
                None
            }
            Some(value) => self.leaf(key, parse(value)),
        }
    }

    /// An optional field read by a leaf parser: `Some(None)` when absent or
    /// null, `None` when present but invalid.
    pub fn optional<T>(
        &mut self,
        key: &str,
        parse: impl FnOnce(&Value) -> Result<T, String>,
    ) -> Option<Option<T>> {
        match self.raw(key) {
            None => Some(None),
            Some(value) => self.leaf(key, parse(value)).map(Some),
        }
    }

    /// A leaf parser's answer for `key`, its error recorded at the field.
    fn leaf<T>(&mut self, key: &str, parsed: Result<T, String>) -> Option<T> {
        parsed.map_err(|message| self.refuse(key, message)).ok()
    }

    /// Records `message` at field `key`; its path is spelled out only now.
    fn refuse(&mut self, key: &str, message: impl Into<String>) {
        let path = self.path_of(key);
        self.errors.push(path, message);
    }

    /// A required field read by a parser that records its own (nested) errors.
    pub fn required_with<T>(
        &mut self,
        key: &str,
        parse: impl FnOnce(&Value, &str, &mut ValidationErrors) -> Option<T>,
    ) -> Option<T> {
        let path = self.path_of(key);
        match self.raw(key) {
            None => {
                self.errors.push(path, "is required");
                None
            }
            Some(value) => parse(value, &path, self.errors),
        }
    }

    /// An optional field read by a parser that records its own errors.
    pub fn optional_with<T>(
        &mut self,
        key: &str,
        parse: impl FnOnce(&Value, &str, &mut ValidationErrors) -> Option<T>,
    ) -> Option<Option<T>> {
        let path = self.path_of(key);
        match self.raw(key) {
            None => Some(None),
            Some(value) => parse(value, &path, self.errors).map(Some),
        }
    }

    /// Records a rule that spans fields (a refinement) when `holds` is false.
    pub fn refine(&mut self, field: &str, holds: bool, message: impl Into<String>) {
        if !holds {
            self.refuse(field, message);
        }
    }

    /// Whether anything was refused so far, here or elsewhere in the document.
    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }
}

/// Parses a whole document as an object whose fields `read` takes in turn.
pub fn parse_object<T>(
    value: &Value,
    read: impl FnOnce(&mut Object<'_>) -> Option<T>,
) -> Result<T, ValidationErrors> {
    let mut errors = ValidationErrors::new();
    let parsed = read_object(value, "", &mut errors, read);
    errors.finish(parsed)
}

/// Reads a nested object at `path` (for [`Object::required_with`]).
pub fn read_object<T>(
    value: &Value,
    path: &str,
    errors: &mut ValidationErrors,
    read: impl FnOnce(&mut Object<'_>) -> Option<T>,
) -> Option<T> {
    let mut object = Object::open(value, path, errors)?;
    read(&mut object)
}

/// Reads a JSON array, each element with `parse` (which records its own errors
/// at `path[i]`), refusing arrays outside `min..=max` elements.
pub fn array_of<T>(
    value: &Value,
    path: &str,
    errors: &mut ValidationErrors,
    min: usize,
    max: usize,
    mut parse: impl FnMut(&Value, &str, &mut ValidationErrors) -> Option<T>,
) -> Option<Vec<T>> {
    let Value::Array(items) = value else {
        errors.push(path, format!("must be an array, not {}", kind_of(value)));
        return None;
    };
    if items.len() < min {
        errors.push(path, format!("must contain at least {min} element(s)"));
        return None;
    }
    if items.len() > max {
        errors.push(path, format!("must contain at most {max} element(s)"));
        return None;
    }
    let mut parsed = Vec::with_capacity(items.len());
    let mut all_valid = true;
    for (i, item) in items.iter().enumerate() {
        match parse(item, &index_path(path, i), errors) {
            Some(value) => parsed.push(value),
            None => all_valid = false,
        }
    }
    all_valid.then_some(parsed)
}

/// The JSON kind of `value`, for messages.
pub fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A string of `min..=max` characters without control characters.
pub fn string(min: usize, max: usize) -> impl Fn(&Value) -> Result<String, String> {
    move |value| {
        let Value::String(text) = value else {
            return Err(format!("must be a string, not {}", kind_of(value)));
        };
        let length = text.chars().count();
        if length < min {
            return Err(if min == 1 {
                "must not be empty".to_owned()
            } else {
                format!("must be at least {min} characters long")
            });
        }
        if length > max {
            return Err(format!("must be at most {max} characters long"));
        }
        if text.chars().any(char::is_control) {
            return Err("must not contain control characters".to_owned());
        }
        Ok(text.clone())
    }
}

/// A free-form text of at most `max` characters (control characters allowed,
/// for comments and log excerpts with line breaks).
pub fn text(max: usize) -> impl Fn(&Value) -> Result<String, String> {
    move |value| {
        let Value::String(text) = value else {
            return Err(format!("must be a string, not {}", kind_of(value)));
        };
        if text.chars().count() > max {
            return Err(format!("must be at most {max} characters long"));
        }
        Ok(text.clone())
    }
}

/// An identifier: 1..=`max` characters, no whitespace or control characters.
pub fn identifier(max: usize) -> impl Fn(&Value) -> Result<String, String> {
    let base = string(1, max);
    move |value| {
        let text = base(value)?;
        if text.chars().any(char::is_whitespace) {
            return Err("must not contain whitespace".to_owned());
        }
        Ok(text)
    }
}

/// An integer in `min..=max`, converted to `T`. JSON `10.0` counts as `10`.
pub fn integer<T: TryFrom<i64>>(min: i64, max: i64) -> impl Fn(&Value) -> Result<T, String> {
    move |value| {
        let Value::Number(number) = value else {
            return Err(format!("must be an integer, not {}", kind_of(value)));
        };
        let integer = match (number.as_i64(), number.as_f64()) {
            (Some(integer), _) => integer,
            (None, Some(float))
                if float.fract() == 0.0 && float.abs() < 9_007_199_254_740_992.0 =>
            {
                float as i64
            }
            _ => return Err(format!("must be an integer, not {number}")),
        };
        if integer < min {
            return Err(format!("must be at least {min}"));
        }
        if integer > max {
            return Err(format!("must be at most {max}"));
        }
        T::try_from(integer).map_err(|_| format!("must be between {min} and {max}"))
    }
}

/// A finite number in `min..=max`.
pub fn number(min: f64, max: f64) -> impl Fn(&Value) -> Result<f64, String> {
    move |value| {
        let Some(number) = value.as_f64().filter(|_| value.is_number()) else {
            return Err(format!("must be a number, not {}", kind_of(value)));
        };
        if number < min {
            return Err(format!("must be at least {min}"));
        }
        if number > max {
            return Err(format!("must be at most {max}"));
        }
        Ok(number)
    }
}

/// Any finite number.
pub fn any_number(value: &Value) -> Result<f64, String> {
    number(f64::MIN, f64::MAX)(value)
}

/// An RFC 3339 date-time.
pub fn timestamp(value: &Value) -> Result<Timestamp, String> {
    let Value::String(text) = value else {
        return Err(format!(
            "must be an RFC 3339 date-time string, not {}",
            kind_of(value)
        ));
    };
    Timestamp::parse_rfc3339(text).map_err(|_| {
        format!("must be an RFC 3339 date-time such as 2025-01-27T10:32:52Z, not {text:?}")
    })
}

/// A JSON object, kept as it is (free-form metadata), of at most `max_keys` keys.
pub fn free_object(max_keys: usize) -> impl Fn(&Value) -> Result<Map<String, Value>, String> {
    move |value| match value {
        Value::Object(map) if map.len() <= max_keys => Ok(map.clone()),
        Value::Object(_) => Err(format!("must have at most {max_keys} keys")),
        other => Err(format!("must be a JSON object, not {}", kind_of(other))),
    }
}

/// A closed set of string values, spelled as on the wire.
pub trait StrEnum: Sized + Copy + 'static {
    /// Every variant with its wire spelling.
    const VARIANTS: &'static [(&'static str, Self)];

    fn as_str(self) -> &'static str;

    fn from_wire(text: &str) -> Option<Self> {
        Self::VARIANTS
            .iter()
            .find(|(name, _)| *name == text)
            .map(|(_, variant)| *variant)
    }
}

/// Reads one of `E`'s wire spellings.
pub fn variant<E: StrEnum>(value: &Value) -> Result<E, String> {
    let expected = || {
        E::VARIANTS
            .iter()
            .map(|(name, _)| format!("{name:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match value {
        Value::String(text) => {
            E::from_wire(text).ok_or_else(|| format!("must be one of {}, not {text:?}", expected()))
        }
        other => Err(format!(
            "must be one of {}, not {}",
            expected(),
            kind_of(other)
        )),
    }
}

/// Declares a string enum with its wire spellings, serde, JSON Schema,
/// `Display`, `FromStr` and [`StrEnum`].
#[macro_export]
macro_rules! str_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $wire:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
            serde::Serialize, serde::Deserialize, schemars::JsonSchema,
        )]
        $vis enum $name {
            $( $(#[$vmeta])* #[serde(rename = $wire)] $variant ),+
        }

        impl $crate::validation::StrEnum for $name {
            const VARIANTS: &'static [(&'static str, Self)] = &[ $( ($wire, Self::$variant) ),+ ];

            fn as_str(self) -> &'static str {
                match self { $( Self::$variant => $wire ),+ }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str($crate::validation::StrEnum::as_str(*self))
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = String;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                $crate::validation::variant(&serde_json::Value::String(text.to_owned()))
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_object_reports_every_bad_field_with_its_path() {
        let document = json!({"name": "", "count": "three", "nested": {"when": "yesterday"}});
        let mut errors = ValidationErrors::new();
        let mut object = Object::open(&document, "", &mut errors).unwrap();
        assert_eq!(object.required("name", string(1, 10)), None);
        assert_eq!(object.required("count", integer::<u32>(0, 5)), None);
        assert_eq!(object.required("missing", string(1, 10)), None);
        object.required_with("nested", |value, path, errors| {
            let mut nested = Object::open(value, path, errors)?;
            nested.required("when", timestamp)
        });
        let fields: Vec<_> = errors.errors().iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["name", "count", "missing", "nested.when"]);
    }

    #[test]
    fn optional_fields_distinguish_absent_from_invalid() {
        let document = json!({"present": 3, "null": null, "bad": "x"});
        let mut errors = ValidationErrors::new();
        let mut object = Object::open(&document, "", &mut errors).unwrap();
        assert_eq!(
            object.optional("present", integer::<u8>(0, 9)),
            Some(Some(3))
        );
        assert_eq!(object.optional("null", integer::<u8>(0, 9)), Some(None));
        assert_eq!(object.optional("absent", integer::<u8>(0, 9)), Some(None));
        assert_eq!(object.optional("bad", integer::<u8>(0, 9)), None);
        assert_eq!(errors.errors().len(), 1);
    }

    #[test]
    fn integers_accept_integral_floats_and_enforce_bounds() {
        let parse = integer::<u32>(1, 50);
        assert_eq!(parse(&json!(10.0)), Ok(10));
        assert!(parse(&json!(10.5)).is_err());
        assert_eq!(parse(&json!(0)), Err("must be at least 1".to_owned()));
        assert_eq!(parse(&json!(51)), Err("must be at most 50".to_owned()));
    }

    #[test]
    fn arrays_report_each_bad_element_by_index() {
        let document = json!([1, "two", 3, null]);
        let mut errors = ValidationErrors::new();
        let parsed = array_of(&document, "items", &mut errors, 1, 10, |v, path, errors| {
            integer::<u8>(0, 9)(v)
                .map_err(|message| errors.push(path, message))
                .ok()
        });
        assert!(parsed.is_none());
        let fields: Vec<_> = errors.errors().iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["items[1]", "items[3]"]);
    }

    #[test]
    fn prefixing_reroots_fields_and_indexes() {
        let mut errors = ValidationErrors::new();
        errors.push("rating", "bad");
        errors.push("[2].id", "bad");
        errors.push("", "bad");
        let fields: Vec<_> = errors
            .prefixed("data")
            .into_errors()
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(fields, ["data.rating", "data[2].id", "data"]);
    }
}
