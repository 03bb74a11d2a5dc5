//! `imsctl`: talks to a running ims over NATS. Every tenant command, every operator command, the
//! queries and the audit tools; human output by default, `--json` for scripts.
//!
//! Exit codes: 0 success, 1 the service refused the request (the error code is printed),
//! 2 bad usage, 3 the service could not be reached.

use clap::Parser as _;

/// A mistake in how imsctl was called (a missing or malformed option, a data dir without the
/// log): exit code 2, like clap's own usage errors, not 3 (the service could not be reached).
#[derive(Debug)]
struct Usage(String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// Returns early with a [`Usage`] error.
macro_rules! usage {
    ($($message:tt)*) => {
        return Err(anyhow::Error::new(Usage(format!($($message)*))))
    };
}

mod args;
mod audit;
mod credentials;
mod import;
mod render;
mod requests;
mod transport;
mod values;

use args::*;
use audit::*;
use credentials::*;
use import::*;
use render::*;
use requests::*;
use transport::*;

/// The whole `imsctl` program.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("imsctl: cannot start the async runtime: {error}");
            return std::process::ExitCode::from(3);
        }
    };
    match runtime.block_on(execute(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("imsctl: {error:#}");
            if error.is::<Usage>() {
                std::process::ExitCode::from(2)
            } else {
                std::process::ExitCode::from(3)
            }
        }
    }
}

fn tenant_of(tenant: Option<&str>) -> anyhow::Result<ims_domain::TenantId> {
    match tenant {
        Some(tenant) => ims_domain::TenantId::parse(tenant)
            .map_err(|e| anyhow::Error::new(Usage(format!("--tenant: {}", e.message)))),
        None => usage!("this command acts as a tenant: pass --tenant ID (or set IMS_TENANT)"),
    }
}

fn region_of(region: &str) -> anyhow::Result<ims_domain::RegionId> {
    ims_domain::RegionId::parse(region)
        .map_err(|e| anyhow::Error::new(Usage(format!("--region: {}", e.message))))
}

async fn execute(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    let subjects = ims_wire::Subjects::new(cli.subject_prefix.clone());
    let command_id = cli.command_id.unwrap_or_else(uuid::Uuid::now_v7);
    let tenant = cli.tenant.clone();
    let nats_url = resolve_nats_url(cli.nats_url.clone());
    let token = resolve_token(cli.token.clone(), cli.token_file.as_deref())?;
    let token = token.as_deref();
    let http_url = cli.http_url.clone();
    let place = |region: &str, tenant: Option<&str>| -> anyhow::Result<Place<'_>> {
        Ok(Place {
            nats_url: &nats_url,
            http_url: &http_url,
            token,
            region: region_of(region)?,
            tenant: tenant_of(tenant)?,
            subjects: subjects.clone(),
        })
    };
    match cli.command {
        Top::Op(OpCommand::Catalog(command)) => {
            let (name, payload) = operator_request(command, command_id);
            let subject = subjects.operator_command(&region_of(&cli.region)?, name);
            send_command(&nats_url, token, subject, name, payload, cli.json).await
        }
        Top::Op(OpCommand::Credential(command)) => {
            credential(command, &nats_url, token, &cli.subject_prefix, cli.json).await
        }
        Top::Audit(args) => {
            audit(
                args,
                &nats_url,
                token,
                &cli.region,
                &cli.subject_prefix,
                tenant.as_deref(),
                cli.json,
            )
            .await
        }
        Top::Image(command) => {
            let at = place(&cli.region, tenant.as_deref())?;
            image_top(command, &at, command_id, cli.json).await
        }
        Top::Images(query_args) => {
            let at = place(&cli.region, tenant.as_deref())?;
            query(&at, query_args, cli.json).await
        }
    }
}

/// Sends a command and prints its reply.
async fn send_command(
    nats_url: &str,
    token: Option<&str>,
    subject: String,
    name: &str,
    payload: Vec<u8>,
    json: bool,
) -> anyhow::Result<std::process::ExitCode> {
    let reply = request(nats_url, token, subject, payload).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
    } else {
        println!("{}", summarize(name, &reply));
    }
    Ok(exit_code(reply["ok"] == true))
}

/// Where a tenant's requests go: the service's subjects in one region, as one tenant, and its
/// HTTP API for image files.
pub(crate) struct Place<'a> {
    pub(crate) nats_url: &'a str,
    pub(crate) http_url: &'a str,
    pub(crate) token: Option<&'a str>,
    pub(crate) subjects: ims_wire::Subjects,
    pub(crate) region: ims_domain::RegionId,
    pub(crate) tenant: ims_domain::TenantId,
}

impl Place<'_> {
    /// The subject of the tenant command `name`.
    pub(crate) fn command(&self, name: &str) -> String {
        self.subjects
            .tenant_command(&self.region, &self.tenant, name)
    }

    /// The subject of `query` as the tenant.
    pub(crate) fn query(&self, query: ims_wire::Query) -> String {
        self.subjects
            .query(&self.region, &self.tenant, query.as_str())
    }

    /// The HTTP path of an image's file.
    pub(crate) fn file_path(&self, image_id: &str) -> String {
        format!(
            "/v1/{}/tenants/{}/images/{image_id}/file",
            self.region, self.tenant
        )
    }
}

/// `imsctl image import | download | show`.
async fn image_top(
    command: ImageTop,
    at: &Place<'_>,
    command_id: uuid::Uuid,
    json: bool,
) -> anyhow::Result<std::process::ExitCode> {
    match command {
        ImageTop::Import(args) => image_import(at, command_id, args, json).await,
        ImageTop::Download { image_id, output } => {
            image_download(
                at.http_url,
                &at.file_path(&image_id),
                at.token,
                &output,
                json,
            )
            .await
        }
        ImageTop::Show { image_id } => query(at, ImagesQuery::Show { image_id }, json).await,
        ImageTop::Command(command) => {
            let (name, payload) = tenant_request(command, command_id);
            send_command(at.nats_url, at.token, at.command(name), name, payload, json).await
        }
    }
}

/// A query as `tenant`, printed as a table or as JSON.
async fn query(
    at: &Place<'_>,
    query: ImagesQuery,
    json: bool,
) -> anyhow::Result<std::process::ExitCode> {
    let (query, params) = query_request(query);
    let payload = serde_json::to_vec(&params)?;
    let answer = request(at.nats_url, at.token, at.query(query), payload).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        println!("{}", render_query(query, &answer));
    }
    Ok(exit_code(answer["ok"] != false))
}

/// 0 when the service did what was asked, 1 when it refused.
fn exit_code(done: bool) -> std::process::ExitCode {
    if done {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(1)
    }
}

/// `imsctl image download`: the file to `output`, or the refusal.
async fn image_download(
    http_url: &str,
    path: &str,
    token: Option<&str>,
    output: &std::path::Path,
    json: bool,
) -> anyhow::Result<std::process::ExitCode> {
    let (status, refused) = crate::files::download(http_url, path, token, output, json).await?;
    if status == 200 {
        println!("downloaded {path} to {}", output.display());
        return Ok(std::process::ExitCode::SUCCESS);
    }
    println!(
        "error [{status}]: {}",
        refused.map_or(String::new(), |r| r["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned())
    );
    Ok(std::process::ExitCode::from(1))
}
