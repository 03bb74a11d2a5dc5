//! Image files over HTTP (DESIGN.md section 14): ranged downloads for the owner and accepted
//! members, and uploads streamed through the import path, reported as the image's build.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use ims_wire::commands::{CommandBody, ReportBuildRequest};
use ims_wire::{Query, QueryParams, WireError, WireErrorCode};
use object_store::GetRange;

use axum::Json;
use ims_domain::RegionId;

use super::{caller, error_response, may_read_tenant, query_value, refusal, HttpState};

/// A `Range` header's single byte range (`bytes=a-b`, `bytes=a-`, `bytes=-n`); several ranges
/// are answered whole, as RFC 9110 allows.
fn byte_range(headers: &HeaderMap) -> Result<Option<GetRange>, WireError> {
    let Some(value) = headers.get(header::RANGE) else {
        return Ok(None);
    };
    let invalid = || {
        WireError::new(
            WireErrorCode::InvalidArgument,
            format!(
                "Range {:?} is not understood; expected bytes=START-END, bytes=START- or bytes=-LENGTH",
                value.to_str().unwrap_or("(not text)")
            ),
        )
    };
    let spec = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("bytes="))
        .ok_or_else(invalid)?;
    if spec.contains(',') {
        return Ok(None);
    }
    let (start, end) = spec.split_once('-').ok_or_else(invalid)?;
    let number = |text: &str| text.trim().parse::<u64>().map_err(|_| invalid());
    Ok(Some(
        match (start.trim().is_empty(), end.trim().is_empty()) {
            (true, false) => GetRange::Suffix(number(end)?),
            (false, true) => GetRange::Offset(number(start)?),
            (false, false) => {
                let (start, end) = (number(start)?, number(end)?);
                if end < start {
                    return Err(invalid());
                }
                GetRange::Bounded(start..end + 1)
            }
            (true, true) => return Err(invalid()),
        },
    ))
}

/// `GET /v1/{region}/tenants/{tenant}/images/{id}/file`: the image's bytes, for its owner and
/// accepted members (Range requests honoured).
pub(crate) async fn download(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Path((region, tenant, id)): Path<(String, String, String)>,
) -> Response {
    let principal = match caller(&state, &headers).await {
        Ok(principal) => principal,
        Err(response) => return response,
    };
    if let Err(response) = may_read_tenant(principal.as_ref(), &tenant) {
        return *response;
    }
    let result = async {
        // The same visibility as the `image` query, and then only owners and accepted members.
        let view = image_view(&state, &region, &tenant, &id).await?;
        let may_download = view["type"] == "private"
            || (view["type"] == "shared" && view["member_status"] == "accepted");
        let no_file = || {
            WireError::new(
                WireErrorCode::NotFound,
                format!("image {id} has no file that tenant {tenant} may download"),
            )
        };
        if !may_download {
            return Err(no_file());
        }
        let region = RegionId::parse(&region).map_err(WireError::from)?;
        let image = ims_domain::ImageId::parse(&id).map_err(WireError::from)?;
        let store = state.stores.get(&region).ok_or_else(|| {
            WireError::new(
                WireErrorCode::Unavailable,
                format!("the image store of region {region} is not in this process"),
            )
        })?;
        let range = byte_range(&headers)?;
        let partial = range.is_some();
        let found = store
            .get(&image, range)
            .await
            .map_err(|error| match error {
                object_store::Error::NotFound { .. } => no_file(),
                other => WireError::new(WireErrorCode::InvalidArgument, other.to_string()),
            })?;
        Ok((found, partial))
    }
    .await;
    match result {
        Ok((found, partial)) => {
            let (total, served) = (found.meta.size, found.range.clone());
            let mut response = axum::body::Body::from_stream(found.into_stream()).into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/octet-stream"),
            );
            headers.insert(
                header::ACCEPT_RANGES,
                header::HeaderValue::from_static("bytes"),
            );
            headers.insert(header::CONTENT_LENGTH, (served.end - served.start).into());
            if partial {
                *response.status_mut() = StatusCode::PARTIAL_CONTENT;
                let content_range = format!(
                    "bytes {}-{}/{total}",
                    served.start,
                    served.end.saturating_sub(1)
                );
                if let Ok(value) = header::HeaderValue::from_str(&content_range) {
                    response.headers_mut().insert(header::CONTENT_RANGE, value);
                }
            }
            response
        }
        Err(error) => error_response(error),
    }
}

/// `PUT /v1/{region}/tenants/{tenant}/images/{id}/file`: the owner uploads the bytes of an image
/// created with `source: {upload: {format}}`. They are streamed to staging under the import
/// cap, hashed, inspected and stored, and the build is reported (failed, with the reason, when
/// the file is refused), once.
pub(crate) async fn upload(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Path((region, tenant, id)): Path<(String, String, String)>,
    body: axum::body::Body,
) -> Response {
    let principal = match caller(&state, &headers).await {
        Ok(principal) => principal,
        Err(response) => return response,
    };
    let owner_only = principal
        .as_ref()
        .is_some_and(|p| p.role.tenant().map(|t| t.as_str()) != Some(tenant.as_str()));
    if owner_only {
        return refusal(
            StatusCode::FORBIDDEN,
            WireErrorCode::Forbidden,
            format!("only tenant {tenant} itself uploads the files of its images"),
        );
    }
    match receive_upload(&state, &region, &tenant, &id, body).await {
        Ok(reply) => {
            let status = match reply["ok"].as_bool() {
                Some(true) => StatusCode::OK,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            (status, Json(reply)).into_response()
        }
        Err(error) => error_response(error),
    }
}

async fn receive_upload(
    state: &HttpState,
    region: &str,
    tenant: &str,
    id: &str,
    body: axum::body::Body,
) -> Result<serde_json::Value, WireError> {
    let view = image_view(state, region, tenant, id).await?;
    let format = view["source"]["upload"]["format"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if view["type"] != "private" || format.is_empty() {
        return Err(WireError::new(
            WireErrorCode::InvalidState,
            format!("image {id} is not tenant {tenant}'s image to upload: create it with source {{\"upload\": {{\"format\": …}}}}"),
        ));
    }
    if view["status"] != "queued" {
        return Err(WireError::new(
            WireErrorCode::InvalidState,
            format!(
                "image {id} is {}; its file is uploaded once, while it is queued",
                view["status"]
            ),
        ));
    }
    let unavailable = |what: String| WireError::new(WireErrorCode::Unavailable, what);
    let region_id = RegionId::parse(region).map_err(WireError::from)?;
    let image = ims_domain::ImageId::parse(id).map_err(WireError::from)?;
    let (Some(store), Some(client)) = (state.stores.get(&region_id), &state.client) else {
        return Err(unavailable(format!(
            "uploads of region {region} are not served by this process"
        )));
    };
    // Streamed straight through the checks into staging.
    let checked = ims_import::import_stream(
        body.into_data_stream(),
        &format,
        &store.staging_path(&image),
    )
    .await
    .map_err(|e| unavailable(format!("staging the upload failed: {e}")))?;
    let outcome = checked.map_err(|error| {
        // A broken connection says nothing about the file: nothing is recorded, and the owner
        // uploads again.
        store.discard(&image);
        WireError::new(
            WireErrorCode::InvalidArgument,
            format!("the upload broke off ({error}); nothing was recorded, upload again"),
        )
    })?;
    match &outcome {
        ims_import::Imported::Built { .. } => store
            .commit(&image)
            .await
            .map_err(|e| unavailable(format!("storing the upload failed: {e}")))?,
        ims_import::Imported::Refused(_) => store.discard(&image),
    }
    let command =
        ims_import::report_payload(&image, &outcome, ims_import::upload_command_id(&image));
    let message = client
        .request(
            state
                .subjects
                .operator_command(&region_id, ReportBuildRequest::NAME),
            bytes::Bytes::from(command),
        )
        .await
        .map_err(|e| unavailable(format!("reporting the upload failed: {e}; upload again")))?;
    let mut reply: serde_json::Value = serde_json::from_slice(&message.payload)
        .map_err(|e| unavailable(format!("the build report's answer: {e}")))?;
    if let ims_import::Imported::Refused(reason) = &outcome {
        reply = serde_json::json!({"ok": false, "image_id": id, "error": {"code": "invalid_argument", "message": reason}});
    }
    Ok(reply)
}

/// The `image` query's answer, for the file routes.
async fn image_view(
    state: &HttpState,
    region: &str,
    tenant: &str,
    id: &str,
) -> Result<serde_json::Value, WireError> {
    let params = QueryParams {
        image_id: Some(id.to_owned()),
        ..QueryParams::default()
    };
    query_value(state, region, tenant, Query::Image, &params).await
}
