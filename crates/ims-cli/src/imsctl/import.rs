//! `imsctl image import`: create an image and upload its file, or have the service download it.

use ims_wire::commands::{command_payload, CommandBody, CreateImageRequest};
use ims_wire::{Query, QueryParams};
use serde_json::Value;

use super::args::*;
use super::render::*;
use super::requests::*;
use super::transport::*;
use super::Place;

/// `imsctl image import`: creates an image with an upload source, waits until the read side has
/// it, and uploads the file over HTTP.
pub(crate) async fn image_import(
    at: &Place<'_>,
    command_id: uuid::Uuid,
    args: ImportArgs,
    json: bool,
) -> anyhow::Result<std::process::ExitCode> {
    let payload = command_payload(&import_body(&args), Some(command_id), None);
    let subject = at.command(CreateImageRequest::NAME);
    let created = request(at.nats_url, at.token, subject, payload).await?;
    if created["ok"] != true {
        println!("{}", summarize("create-image", &created));
        return Ok(std::process::ExitCode::from(1));
    }
    let id = created["image_id"].as_str().unwrap_or_default().to_owned();
    // Read your write: the upload checks the image on the read side.
    let seen = QueryParams {
        image_id: Some(id.clone()),
        min_position: created["position"].as_u64(),
        ..QueryParams::default()
    };
    let view = request(
        at.nats_url,
        at.token,
        at.query(Query::Image),
        serde_json::to_vec(&seen)?,
    )
    .await?;
    let (Some(file), None) = (&args.file, &args.url) else {
        return imported_from_url(at, view, json).await;
    };
    let path = at.file_path(&id);
    let (status, answer) = crate::files::upload(at.http_url, &path, at.token, file, json).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else if status == 200 {
        println!("ok: imported {} as image {id}", file.display());
    } else {
        println!(
            "error [{}]: {} (image {id} is recorded as failed)",
            answer["error"]["code"].as_str().unwrap_or("?"),
            answer["error"]["message"].as_str().unwrap_or("")
        );
    }
    Ok(if status == 200 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(1)
    })
}

/// Waits, with a spinner, until the service's import worker has imported the image `view`
/// describes (active) or refused it (killed, with the reason).
pub(crate) async fn imported_from_url(
    at: &Place<'_>,
    mut view: Value,
    json: bool,
) -> anyhow::Result<std::process::ExitCode> {
    let id = view["id"].as_str().unwrap_or_default().to_owned();
    let spinner = if json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new_spinner()
    };
    spinner.set_message(format!("the service is importing image {id}"));
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    while view["status"] == "queued" || view["status"] == "saving" {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let params = QueryParams {
            image_id: Some(id.clone()),
            ..QueryParams::default()
        };
        view = request(
            at.nats_url,
            at.token,
            at.query(Query::Image),
            serde_json::to_vec(&params)?,
        )
        .await?;
    }
    spinner.finish_and_clear();
    let active = view["status"] == "active";
    if json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else if active {
        println!(
            "ok: imported image {id}: {} bytes, {}, sha256 {}",
            view["size_bytes"],
            view["detected_format"].as_str().unwrap_or("?"),
            view["checksum_sha256"].as_str().unwrap_or("?")
        );
    } else {
        println!(
            "error: image {id} is {}: {}",
            view["status"],
            view["failure_reason"]
                .as_str()
                .unwrap_or("no reason recorded")
        );
    }
    Ok(if active {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(1)
    })
}
