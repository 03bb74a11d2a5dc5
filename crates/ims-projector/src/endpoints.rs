//! Query endpoints over NATS: `ims.v1.<region>.q.<tenant>.<query>`, registered with the NATS
//! micro-services API as `ims-query`. Replicas share the default queue group, so NATS spreads
//! queries over them.

use std::future::Future;
use std::sync::Arc;

use async_nats::service::ServiceExt;
use bytes::Bytes;
use futures::StreamExt;
use ims_domain::TenantId;
use ims_wire::views::QueryError;
use ims_wire::{Query, QueryParams};
use ims_wire::{Subjects, WireError, WireErrorCode};

use crate::projector::RegionModels;
use ims_bus::{
    overloaded, reply_bytes_max, stop_taking, RoleError, COMMAND_PAYLOAD_BYTES_MAX, SERVICE_VERSION,
};

/// Answers one query message with JSON.
pub async fn handle_query(models: &RegionModels, subject: &str, payload: &[u8]) -> Vec<u8> {
    let result = async {
        if payload.len() > COMMAND_PAYLOAD_BYTES_MAX {
            return Err(WireError::new(
                WireErrorCode::PayloadTooLarge,
                format!(
                    "the query is {} bytes; at most {COMMAND_PAYLOAD_BYTES_MAX} are accepted",
                    payload.len()
                ),
            ));
        }
        let (tenant, name) = Subjects::tail_tokens(subject).ok_or_else(|| {
            WireError::new(
                WireErrorCode::InvalidArgument,
                format!("subject {subject:?} has too few tokens"),
            )
        })?;
        let tenant = TenantId::parse(tenant).map_err(|e| {
            WireError::new(
                WireErrorCode::InvalidArgument,
                format!("subject tenant token: {}", e.message),
            )
        })?;
        let params: QueryParams = if payload.iter().all(u8::is_ascii_whitespace) {
            QueryParams::default()
        } else {
            serde_json::from_slice(payload).map_err(|e| {
                let code = if e.is_syntax() || e.is_eof() {
                    WireErrorCode::InvalidJson
                } else {
                    WireErrorCode::InvalidArgument
                };
                WireError::new(code, format!("query {name}: {e}"))
            })?
        };
        models.query(&tenant, Query::parse(name)?, &params).await
    }
    .await;
    match result {
        Ok(value) => serde_json::to_vec(&value),
        Err(error) => serde_json::to_vec(&QueryError { ok: false, error }),
    }
    .expect("query answers serialise")
}

/// Queries being answered at once by one region's endpoint; past it a query is answered
/// `unavailable` at once (as the command endpoints do).
pub const QUERIES_IN_FLIGHT_MAX: usize = 1024;

/// The most rows one `audit.rows` reply carries.
pub const AUDIT_ROWS_MAX: usize = 2000;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RowsRequest {
    model: String,
    after: Option<String>,
    max: Option<usize>,
}

/// Answers `ims.v1.<region>.audit.rows`: a page of a read model's raw rows (hex) and its
/// checkpoint, for `imsctl audit verify` against a running service.
fn audit_rows(models: &RegionModels, payload: &[u8], bytes_max: usize) -> Vec<u8> {
    let result = (|| {
        let request: RowsRequest = serde_json::from_slice(payload).map_err(|e| {
            WireError::new(
                WireErrorCode::InvalidArgument,
                format!("audit.rows expects {{\"model\", \"after\", \"max\"}}: {e}"),
            )
        })?;
        let after = request
            .after
            .as_deref()
            .map(hex::decode)
            .transpose()
            .map_err(|e| {
                WireError::new(
                    WireErrorCode::InvalidArgument,
                    format!("after is not hex: {e}"),
                )
            })?;
        let max = request
            .max
            .unwrap_or(AUDIT_ROWS_MAX)
            .clamp(1, AUDIT_ROWS_MAX);
        let (checkpoint, rows) = models.rows(&request.model, after.as_deref(), max)?;
        // Cut by bytes too (hex doubles each row); `next_after` says where to go on.
        let mut bytes = 256;
        let mut page: Vec<[String; 2]> = Vec::with_capacity(rows.len());
        for (key, value) in &rows {
            bytes += 2 * (key.len() + value.len()) + 8;
            if !page.is_empty() && bytes > bytes_max {
                break;
            }
            page.push([hex::encode(key), hex::encode(value)]);
        }
        let next_after = (page.len() < rows.len() || rows.len() == max)
            .then(|| page.last().map(|row| row[0].clone()))
            .flatten();
        Ok(serde_json::json!({"checkpoint": checkpoint, "rows": page, "next_after": next_after}))
    })();
    match result {
        Ok(value) => serde_json::to_vec(&value),
        Err(error) => serde_json::to_vec(&QueryError { ok: false, error }),
    }
    .expect("answers serialise")
}

/// Serves the queries of one region until `stop` completes, and then those that reached it
/// before.
pub async fn serve_queries(
    client: async_nats::Client,
    subjects: Subjects,
    models: Arc<RegionModels>,
    stop: impl Future<Output = ()>,
) -> Result<(), RoleError> {
    let region = models.region.clone();
    models.set_reply_bytes_max(reply_bytes_max(&client));
    let service = client
        .service_builder()
        .description(format!(
            "ims query service of region {region}: read models of images, shares, feeds"
        ))
        .metadata(
            [("region".to_owned(), region.to_string())]
                .into_iter()
                .collect(),
        )
        .start("ims-query", SERVICE_VERSION)
        .await
        .map_err(|e| RoleError::nats("registering the ims-query service", e))?;
    let mut queries = service
        .endpoint_builder()
        .name("queries")
        .add(subjects.queries(&region))
        .await
        .map_err(|e| RoleError::nats("adding the queries endpoint", e))?;
    let mut rows = service
        .endpoint_builder()
        .name("audit-rows")
        .add(subjects.audit(&region, "rows"))
        .await
        .map_err(|e| RoleError::nats("adding the audit-rows endpoint", e))?;
    let in_flight = Arc::new(tokio::sync::Semaphore::new(QUERIES_IN_FLIGHT_MAX));
    tokio::pin!(stop);
    let mut stopping = false;
    loop {
        let request = tokio::select! {
            _ = &mut stop, if !stopping => {
                stop_taking([&mut queries, &mut rows]).await;
                stopping = true;
                continue;
            }
            Some(request) = rows.next() => {
                let answer = audit_rows(&models, &request.message.payload, reply_bytes_max(&client));
                let _ = request.respond(Ok(Bytes::from(answer))).await;
                continue;
            }
            Some(request) = queries.next() => request,
            else => break,
        };
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            let _ = request.respond(Ok(overloaded("queries"))).await;
            continue;
        };
        let models = models.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let answer =
                handle_query(&models, &request.message.subject, &request.message.payload).await;
            let _ = request.respond(Ok(Bytes::from(answer))).await;
        });
    }
    service
        .stop()
        .await
        .map_err(|e| RoleError::nats("stopping the ims-query service", e))?;
    Ok(())
}
