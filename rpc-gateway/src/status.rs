//! Statuses as HTTP answers: the HTTP code grpc-gateway gives each status code, and a JSON
//! body with the code (its number and its name) and the message.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rpc_core::{Code, Status};

/// The HTTP status grpc-gateway answers a status code with (`runtime.HTTPStatusFromCode`).
///
/// ```
/// use rpc_core::Code;
/// use rpc_gateway::http_status;
///
/// assert_eq!(http_status(Code::NotFound).as_u16(), 404);
/// assert_eq!(http_status(Code::ResourceExhausted).as_u16(), 429);
/// assert_eq!(http_status(Code::Unavailable).as_u16(), 503);
/// ```
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        // nginx's "client closed request".
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// The JSON a failed call is answered with: `{"code": 5, "status": "NOT_FOUND", "message":
/// "...", "details": []}` (grpc-gateway's shape, with the code's name added).
pub fn error_json(status: &Status) -> serde_json::Value {
    serde_json::json!({
        "code": status.code().as_u32(),
        "status": status.code().to_string(),
        "message": status.message(),
        "details": [],
    })
}

/// A status as a whole HTTP response.
pub(crate) fn error_response(status: &Status) -> Response {
    let mut response = (http_status(status.code()), error_json(status).to_string()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_maps_as_grpc_gateway_maps_it() {
        let expected = [
            (Code::Ok, 200),
            (Code::Cancelled, 499),
            (Code::Unknown, 500),
            (Code::InvalidArgument, 400),
            (Code::DeadlineExceeded, 504),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::PermissionDenied, 403),
            (Code::ResourceExhausted, 429),
            (Code::FailedPrecondition, 400),
            (Code::Aborted, 409),
            (Code::OutOfRange, 400),
            (Code::Unimplemented, 501),
            (Code::Internal, 500),
            (Code::Unavailable, 503),
            (Code::DataLoss, 500),
            (Code::Unauthenticated, 401),
        ];
        for (code, http) in expected {
            assert_eq!(http_status(code).as_u16(), http, "{code}");
        }
    }
}
