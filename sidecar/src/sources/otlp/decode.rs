//! OTLP/HTTP bodies in and out: `ExportMetricsServiceRequest` from protobuf or OTLP/JSON, the
//! `ExportMetricsServiceResponse` (with `partial_success`) and the `google.rpc.Status` error
//! body, each in the encoding of the request, as the OTLP specification says.

use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use prost::Message as _;

/// The two OTLP/HTTP encodings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    /// From the request's Content-Type; `None` for anything else (HTTP 415).
    pub fn from_content_type(ct: Option<&str>) -> Option<Encoding> {
        let ct = ct?;
        let media = ct.split(';').next().unwrap_or("").trim();
        if media.eq_ignore_ascii_case("application/x-protobuf") {
            Some(Encoding::Protobuf)
        } else if media.eq_ignore_ascii_case("application/json") {
            Some(Encoding::Json)
        } else {
            None
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Protobuf => "protobuf",
            Encoding::Json => "json",
        }
    }
}

/// Why a request body could not be read at all (HTTP 400, nothing applied).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed OTLP protobuf body: {0}")]
    Protobuf(String),
    #[error("malformed OTLP/JSON body: {0}")]
    Json(String),
}

impl DecodeError {
    /// A fixed label for self-metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Protobuf(_) => "invalid_protobuf",
            DecodeError::Json(_) => "invalid_json",
        }
    }
}

/// Decodes a (decompressed) request body.
///
/// OTLP/JSON is the protobuf JSON mapping with the OTLP deviations the `opentelemetry-proto`
/// serde derive implements: lowerCamelCase keys, enums as integers, 64-bit integers as
/// decimal strings (plain numbers accepted too), trace and span ids as hex; unknown fields
/// are ignored.
pub fn decode(body: &[u8], encoding: Encoding) -> Result<ExportMetricsServiceRequest, DecodeError> {
    match encoding {
        Encoding::Protobuf => ExportMetricsServiceRequest::decode(body)
            .map_err(|e| DecodeError::Protobuf(one_line(&e.to_string()))),
        Encoding::Json => {
            serde_json::from_slice(body).map_err(|e| DecodeError::Json(one_line(&e.to_string())))
        }
    }
}

/// The success answer: empty when everything was accepted, `partial_success` otherwise (also
/// with zero rejected points and a message, which the specification calls a warning).
pub fn response(rejected: u64, message: &str, encoding: Encoding) -> Vec<u8> {
    let partial_success =
        (rejected > 0 || !message.is_empty()).then(|| ExportMetricsPartialSuccess {
            rejected_data_points: i64::try_from(rejected).unwrap_or(i64::MAX),
            error_message: message.to_string(),
        });
    match (encoding, partial_success) {
        (Encoding::Protobuf, partial_success) => {
            ExportMetricsServiceResponse { partial_success }.encode_to_vec()
        }
        (Encoding::Json, None) => b"{}".to_vec(),
        // Written here rather than by the serde derive, which writes the int64 as a number:
        // the protobuf JSON mapping (and OTLP/JSON) writes 64-bit integers as strings.
        (Encoding::Json, Some(p)) => serde_json::json!({
            "partialSuccess": {
                "rejectedDataPoints": p.rejected_data_points.to_string(),
                "errorMessage": p.error_message,
            }
        })
        .to_string()
        .into_bytes(),
    }
}

/// `google.rpc.Status`, the body of OTLP/HTTP error answers. Written by hand: two fields,
/// and `opentelemetry-proto` does not ship the `google.rpc` package.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Status {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

/// `google.rpc.Code` values used in error answers.
pub const CODE_INVALID_ARGUMENT: i32 = 3;
pub const CODE_RESOURCE_EXHAUSTED: i32 = 8;
pub const CODE_UNIMPLEMENTED: i32 = 12;

/// An error body in the request's encoding (protobuf when the encoding is unknown).
pub fn status(code: i32, message: &str, encoding: Encoding) -> Vec<u8> {
    match encoding {
        Encoding::Protobuf => Status {
            code,
            message: message.to_string(),
        }
        .encode_to_vec(),
        Encoding::Json => serde_json::json!({ "code": code, "message": message })
            .to_string()
            .into_bytes(),
    }
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}
