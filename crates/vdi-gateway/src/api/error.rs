//! The one error type of the API and its JSON shape (`vdi_wire::ErrorBody`).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use vdi_wire::{ErrorBody, FieldError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    TargetNotAllowed(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("invalid settings")]
    InvalidSettings(Vec<FieldError>),
    #[error("host-local fields are set on the host, not through the API")]
    HostLocal(Vec<FieldError>),
    #[error("{0}")]
    Unresolvable(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Disabled(String),
    #[error("{0}")]
    Draining(String),
    #[error("{0}")]
    NoFreePort(String),
    #[error("{0}")]
    StreamLimit(String),
    #[error("{0}")]
    TooManyTunnels(String),
    #[error("{0}")]
    ClientMismatch(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    StorageFull(String),
    #[error("{0}")]
    StorageUnavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        use ApiError::*;
        match self {
            Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            TargetNotAllowed(_) => (StatusCode::FORBIDDEN, "target_not_allowed"),
            NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            InvalidSettings(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_settings"),
            HostLocal(_) => (StatusCode::FORBIDDEN, "host_local_field"),
            // Not 422: the request is well-formed (the schema cannot tell names
            // that resolve); the desktop it names is not found.
            Unresolvable(_) => (StatusCode::NOT_FOUND, "unresolvable_target"),
            Conflict(_) => (StatusCode::CONFLICT, "cannot_apply"),
            Disabled(_) => (StatusCode::SERVICE_UNAVAILABLE, "gateway_disabled"),
            Draining(_) => (StatusCode::SERVICE_UNAVAILABLE, "draining"),
            NoFreePort(_) => (StatusCode::SERVICE_UNAVAILABLE, "no_free_port"),
            StreamLimit(_) => (StatusCode::SERVICE_UNAVAILABLE, "stream_limit"),
            TooManyTunnels(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_tunnels"),
            ClientMismatch(_) => (StatusCode::FORBIDDEN, "client_mismatch"),
            MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            StorageFull(_) => (StatusCode::INSUFFICIENT_STORAGE, "storage_full"),
            StorageUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable"),
            Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    pub fn body(&self) -> ErrorBody {
        let (_, code) = self.status_and_code();
        let fields = match self {
            ApiError::InvalidSettings(f) | ApiError::HostLocal(f) => f.clone(),
            _ => Vec::new(),
        };
        let message = match self {
            ApiError::InvalidSettings(f) => format!(
                "invalid settings: {}",
                f.iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            ApiError::HostLocal(f) => format!(
                "host-local fields are set on the host (vdi-gateway settings set), not through the API: {}",
                f.iter()
                    .map(|e| e.field.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            other => other.to_string(),
        };
        ErrorBody {
            code: code.into(),
            message,
            fields,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, _) = self.status_and_code();
        // A drained node refusing tunnels is doing its job, not failing.
        if status.is_server_error() && !matches!(self, ApiError::Draining(_)) {
            tracing::error!(error = %self, "request failed");
        }
        (status, Json(self.body())).into_response()
    }
}

impl From<crate::gateway::OpenError> for ApiError {
    fn from(e: crate::gateway::OpenError) -> Self {
        use crate::gateway::OpenError::*;
        let msg = e.to_string();
        match e {
            Disabled => ApiError::Disabled(msg),
            // The same answer for the broker: try again, here or elsewhere.
            Draining | Restarting => ApiError::Draining(msg),
            BadRequest(_) => ApiError::BadRequest(msg),
            Unresolvable(_) => ApiError::Unresolvable(msg),
            NotAllowed(_) => ApiError::TargetNotAllowed(msg),
            NoTunnel(crate::tunnel::NoTunnel::NoFreePort { .. }) => ApiError::NoFreePort(msg),
            NoTunnel(crate::tunnel::NoTunnel::TooManyTunnels { .. }) => {
                ApiError::TooManyTunnels(msg)
            }
            NoTunnel(crate::tunnel::NoTunnel::Restarting) => ApiError::Draining(msg),
        }
    }
}

impl From<crate::drain::DrainError> for ApiError {
    fn from(e: crate::drain::DrainError) -> Self {
        // ENOSPC
        if e.source.raw_os_error() == Some(28) {
            ApiError::StorageFull(e.to_string())
        } else {
            ApiError::StorageUnavailable(e.to_string())
        }
    }
}

impl From<crate::gateway::NotFound> for ApiError {
    fn from(e: crate::gateway::NotFound) -> Self {
        ApiError::NotFound(e.to_string())
    }
}

impl From<crate::gateway::ChangeError> for ApiError {
    fn from(e: crate::gateway::ChangeError) -> Self {
        use crate::gateway::ChangeError;
        use crate::store::StoreError;
        match e {
            ChangeError::Invalid(s) => ApiError::InvalidSettings(s.field_errors()),
            ChangeError::Apply(msg) => ApiError::Conflict(msg),
            ChangeError::HostLocal(fields) => ApiError::HostLocal(
                fields
                    .into_iter()
                    .map(|f| {
                        FieldError::new(
                            f,
                            "host-local: set it on the host (vdi-gateway settings set)",
                        )
                    })
                    .collect(),
            ),
            ChangeError::Store(StoreError::Conflict) => {
                ApiError::Conflict(StoreError::Conflict.to_string())
            }
            ChangeError::Store(StoreError::Rejected(s)) => {
                ApiError::InvalidSettings(s.field_errors())
            }
            // The disk refused the write: nothing changed (SQLite's
            // transaction), and the admin is told what to fix.
            ChangeError::Store(other) => match other.storage() {
                Some(crate::store::Storage::Full) => ApiError::StorageFull(format!(
                    "{other}; nothing was changed (free space on that file system)"
                )),
                Some(crate::store::Storage::ReadOnly) => ApiError::StorageUnavailable(format!(
                    "{other}; nothing was changed (the file system is read-only or the file cannot be written)"
                )),
                None => ApiError::Internal(other.to_string()),
            },
        }
    }
}
