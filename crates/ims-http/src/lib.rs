//! The HTTP API (DESIGN.md section 5): the same queries as NATS, plus `/healthz`, `/readyz` and
//! `/metrics`. Errors carry the same codes as NATS, with fitting statuses.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::extract::{Path, Query as UrlQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ims_domain::{RegionId, TenantId};
use ims_log::EventLog;
use ims_wire::views::QueryError;
use ims_wire::{Query, QueryParams, WireError, WireErrorCode};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use ims_bus::RoleError;
use ims_iam::{AuthFailure, Authenticator};
use ims_identity::Principal;
use ims_projector::RegionModels;
use ims_store::ImageStore;

mod files;

use files::{download, upload};

/// The process-wide Prometheus recorder (installed once, on first use).
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Another recorder may be installed already (an embedding program); then ours just
        // renders nothing, which /metrics shows honestly.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// What the HTTP handlers share.
#[derive(Clone, Debug)]
pub struct HttpState {
    pub regions: Arc<HashMap<RegionId, Arc<RegionModels>>>,
    /// Logs of the regions whose writer runs in this process (for history).
    pub logs: Arc<HashMap<RegionId, EventLog>>,
    /// The image stores of the regions whose writer runs in this process (for downloads).
    pub stores: Arc<HashMap<RegionId, ImageStore>>,
    /// The service's NATS connection, to report uploads' builds (none: uploads unavailable).
    pub client: Option<async_nats::Client>,
    pub subjects: ims_wire::Subjects,
    /// Checks the bearer token of every `/v1` request.
    pub authenticator: Authenticator,
}

/// A refusal with the status of its kind and the usual error body.
fn refusal(status: StatusCode, code: WireErrorCode, message: String) -> Response {
    (
        status,
        Json(QueryError {
            ok: false,
            error: WireError::new(code, message),
        }),
    )
        .into_response()
}

/// Who calls: 401 without a live credential; `Ok(None)` only when auth is off.
async fn caller(state: &HttpState, headers: &HeaderMap) -> Result<Option<Principal>, Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match state.authenticator.authenticate(token).await {
        Ok(principal) => Ok(principal),
        Err(AuthFailure::Unauthenticated(message)) => {
            let mut response = refusal(
                StatusCode::UNAUTHORIZED,
                WireErrorCode::Unauthenticated,
                message,
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"ims\""),
            );
            Err(response)
        }
        Err(AuthFailure::Unavailable(message)) => Err(refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            WireErrorCode::Unavailable,
            message,
        )),
    }
}

/// 403 unless the caller may read what belongs to `tenant`.
fn may_read_tenant(principal: Option<&Principal>, tenant: &str) -> Result<(), Box<Response>> {
    let Some(principal) = principal else {
        return Ok(());
    };
    match TenantId::parse(tenant) {
        Ok(tenant) if principal.role.may_read_tenant(&tenant) => Ok(()),
        Ok(tenant) => Err(Box::new(refusal(
            StatusCode::FORBIDDEN,
            WireErrorCode::Forbidden,
            format!(
                "credential {} is {}; it may not read tenant {tenant}'s paths",
                principal.key_id, principal.role
            ),
        ))),
        // A malformed id is the query's error to explain.
        Err(_) => Ok(()),
    }
}

fn error_response(error: WireError) -> Response {
    let status =
        StatusCode::from_u16(error.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(QueryError { ok: false, error })).into_response()
}

fn models_of(state: &HttpState, region: &str) -> Result<Arc<RegionModels>, WireError> {
    let region = RegionId::parse(region).map_err(WireError::from)?;
    state.regions.get(&region).cloned().ok_or_else(|| {
        let served: Vec<String> = state.regions.keys().map(|r| r.to_string()).collect();
        WireError::new(
            WireErrorCode::NotFound,
            format!(
                "region {region} is not served here; this server serves {}",
                served.join(", ")
            ),
        )
    })
}

async fn query(
    state: &HttpState,
    headers: &HeaderMap,
    region: &str,
    tenant: &str,
    name: Query,
    mut params: QueryParams,
    image_id: Option<String>,
) -> Response {
    let principal = match caller(state, headers).await {
        Ok(principal) => principal,
        Err(response) => return response,
    };
    if let Err(response) = may_read_tenant(principal.as_ref(), tenant) {
        return *response;
    }
    if image_id.is_some() {
        params.image_id = image_id;
    }
    let result = query_value(state, region, tenant, name, &params).await;
    match result {
        Ok(value) => Json(value).into_response(),
        Err(error) => error_response(error),
    }
}

type Params = Result<UrlQuery<QueryParams>, axum::extract::rejection::QueryRejection>;

fn params(params: Params) -> Result<QueryParams, WireError> {
    params
        .map(|UrlQuery(p)| p)
        .map_err(|e| WireError::new(WireErrorCode::InvalidArgument, e.body_text()))
}

macro_rules! tenant_route {
    ($name:expr) => {
        |State(state): State<HttpState>,
         headers: HeaderMap,
         Path((region, tenant)): Path<(String, String)>,
         p: Params| async move {
            match params(p) {
                Ok(p) => query(&state, &headers, &region, &tenant, $name, p, None).await,
                Err(error) => error_response(error),
            }
        }
    };
}

macro_rules! image_route {
    ($name:expr) => {
        |State(state): State<HttpState>,
         headers: HeaderMap,
         Path((region, tenant, id)): Path<(String, String, String)>,
         p: Params| async move {
            match params(p) {
                Ok(p) => query(&state, &headers, &region, &tenant, $name, p, Some(id)).await,
                Err(error) => error_response(error),
            }
        }
    };
}

async fn history(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Path((region, id)): Path<(String, String)>,
) -> Response {
    let principal = match caller(&state, &headers).await {
        Ok(principal) => principal,
        Err(response) => return response,
    };
    let result = (|| {
        let region = RegionId::parse(&region).map_err(WireError::from)?;
        let id = ims_domain::ImageId::parse(&id).map_err(WireError::from)?;
        let log = state.logs.get(&region).ok_or_else(|| WireError::new(WireErrorCode::Unavailable, format!("the log of region {region} is not in this process; ask imsctl audit history over NATS")))?;
        let envelopes = log
            .read_stream(&format!("image/{id}"))
            .map_err(|e| WireError::new(WireErrorCode::Unavailable, e.to_string()))?;
        let no_history = || {
            WireError::new(
                WireErrorCode::NotFound,
                format!("image {id} has no history in region {region}"),
            )
        };
        if envelopes.is_empty() {
            return Err(no_history());
        }
        // A tenant reads only the history of its own images; anyone else's is answered as if
        // it did not exist, so the route reveals nothing about other tenants' images.
        if let Some(tenant) = principal.as_ref().and_then(|p| p.role.tenant()) {
            if ims_audit::image_owner(&envelopes).as_ref() != Some(tenant) {
                return Err(no_history());
            }
        }
        Ok(ims_audit::history_json(&envelopes))
    })();
    match result {
        Ok(value) => Json(value).into_response(),
        Err(error) => error_response(error),
    }
}

/// A query's answer as JSON, for routes that build on one.
async fn query_value(
    state: &HttpState,
    region: &str,
    tenant: &str,
    name: Query,
    params: &QueryParams,
) -> Result<serde_json::Value, WireError> {
    let models = models_of(state, region)?;
    let tenant = TenantId::parse(tenant).map_err(WireError::from)?;
    Ok(models.query(&tenant, name, params).await?.to_value())
}

async fn ready(State(state): State<HttpState>) -> Response {
    let behind: Vec<String> = state
        .regions
        .values()
        .filter(|m| !m.caught_up())
        .map(|m| match m.log_readable() {
            true => format!("{} ({} events behind)", m.region, m.lag()),
            false => format!("{} (its log has not answered)", m.region),
        })
        .collect();
    if behind.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("catching up: {}\n", behind.join(", ")),
        )
            .into_response()
    }
}

/// The router, for serving and for tests.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(|| async { prometheus().render() }))
        .route(
            "/v1/{region}/tenants/{tenant}/images",
            get(tenant_route!(Query::VisibleImages)),
        )
        .route(
            "/v1/{region}/tenants/{tenant}/shared-with-me",
            get(tenant_route!(Query::SharedWithMe)),
        )
        .route(
            "/v1/{region}/tenants/{tenant}/share-counts",
            get(tenant_route!(Query::ShareCounts)),
        )
        .route(
            "/v1/{region}/tenants/{tenant}/feed",
            get(tenant_route!(Query::Feed)),
        )
        .route(
            "/v1/{region}/tenants/{tenant}/usage",
            get(tenant_route!(Query::Usage)),
        )
        .route(
            "/v1/{region}/tenants/{tenant}/unused-images",
            get(tenant_route!(Query::UnusedImages)),
        )
        .route(
            "/v1/{region}/tenants/{tenant}/recycle-bin",
            get(tenant_route!(Query::RecycleBin)),
        )
        .route(
            "/v1/{region}/tenants/{tenant}/families/{family}/latest",
            get(
                |State(state): State<HttpState>,
                 headers: HeaderMap,
                 Path((region, tenant, family)): Path<(String, String, String)>,
                 p: Params| async move {
                    match params(p) {
                        Ok(mut p) => {
                            p.family = Some(family);
                            query(&state, &headers, &region, &tenant, Query::Latest, p, None).await
                        }
                        Err(error) => error_response(error),
                    }
                },
            ),
        )
        .route(
            "/v1/{region}/tenants/{tenant}/images/{id}",
            get(image_route!(Query::Image)),
        )
        .route(
            "/v1/{region}/tenants/{tenant}/images/{id}/members",
            get(image_route!(Query::Members)),
        )
        .route(
            "/v1/{region}/tenants/{tenant}/images/{id}/usable",
            get(image_route!(Query::Usable)),
        )
        .route(
            "/v1/{region}/tenants/{tenant}/images/{id}/file",
            get(download).put(upload),
        )
        .route("/v1/{region}/images/{id}/history", get(history))
        .fallback(|| async {
            error_response(WireError::new(
                WireErrorCode::NotFound,
                "no such route; see README.md for the HTTP API",
            ))
        })
        .with_state(state)
}

/// Serves HTTP on `addr` until `stop` completes.
pub async fn serve_http(
    addr: SocketAddr,
    state: HttpState,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RoleError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|error| RoleError::Io {
            doing: format!("binding HTTP on {addr}"),
            error,
        })?;
    tracing::info!(%addr, "HTTP API listening");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(stop)
        .await
        .map_err(|error| RoleError::Io {
            doing: format!("serving HTTP on {addr}"),
            error,
        })
}
