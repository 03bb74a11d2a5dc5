//! `imsctl`: talks to a running ims over NATS. Every tenant command, every operator command, the
//! queries and the audit tools; human output by default, `--json` for scripts.
//!
//! Exit codes: 0 success, 1 the service refused the request (the error code is printed),
//! 2 bad usage, 3 the service could not be reached.

use clap::Parser as _;
use serde_json::json;

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

fn tenant_of(tenant: Option<&str>) -> anyhow::Result<&str> {
    match tenant {
        Some(tenant) => Ok(tenant),
        None => usage!("this command acts as a tenant: pass --tenant ID (or set IMS_TENANT)"),
    }
}

async fn execute(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    let prefix = format!("{}.v1.{}", cli.subject_prefix, cli.region);
    let command_id = cli.command_id.unwrap_or_else(uuid::Uuid::now_v7);
    let tenant = cli.tenant.clone();
    let nats_url = resolve_nats_url(cli.nats_url.clone());
    let token = resolve_token(cli.token.clone(), cli.token_file.as_deref())?;
    let token = token.as_deref();
    let (subject, name, body) = match cli.command {
        Top::Op(OpCommand::Credential(command)) => {
            return credential(command, &nats_url, token, &cli.subject_prefix, cli.json).await;
        }
        Top::Image(ImageTop::Import(args)) => {
            let tenant = tenant_of(tenant.as_deref())?.to_owned();
            return image_import(
                &nats_url,
                &cli.http_url,
                token,
                &prefix,
                &tenant,
                command_id,
                args,
                cli.json,
            )
            .await;
        }
        Top::Image(ImageTop::Download { image_id, output }) => {
            let tenant = tenant_of(tenant.as_deref())?;
            let path = format!("/v1/{}/tenants/{tenant}/images/{image_id}/file", cli.region);
            return image_download(&cli.http_url, &path, token, &output, cli.json).await;
        }
        Top::Image(ImageTop::Command(command)) => {
            let (name, body) = tenant_request(command);
            (
                format!("{prefix}.cmd.{}.{name}", tenant_of(tenant.as_deref())?),
                name,
                body,
            )
        }
        Top::Op(OpCommand::Catalog(command)) => {
            let (name, body) = operator_request(command);
            (format!("{prefix}.op.{name}"), name, body)
        }
        Top::Audit(args) => {
            return audit(
                args,
                &nats_url,
                token,
                &cli.region,
                &cli.subject_prefix,
                tenant.as_deref(),
                cli.json,
            )
            .await;
        }
        Top::Image(ImageTop::Show { image_id }) => {
            return query(
                &nats_url,
                token,
                &prefix,
                tenant_of(tenant.as_deref())?,
                ImagesQuery::Show { image_id },
                cli.json,
            )
            .await;
        }
        Top::Images(query_args) => {
            return query(
                &nats_url,
                token,
                &prefix,
                tenant_of(tenant.as_deref())?,
                query_args,
                cli.json,
            )
            .await;
        }
    };
    let body = merge(body, json!({"command_id": command_id.to_string()}));
    let reply = request(&nats_url, token, subject, &body).await?;
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
    } else {
        println!("{}", summarize(name, &reply));
    }
    Ok(exit_code(reply["ok"] == true))
}

/// A query as `tenant`, printed as a table or as JSON.
async fn query(
    nats_url: &str,
    token: Option<&str>,
    prefix: &str,
    tenant: &str,
    query: ImagesQuery,
    json: bool,
) -> anyhow::Result<std::process::ExitCode> {
    let (name, body) = query_request(query);
    let subject = format!("{prefix}.q.{tenant}.{name}");
    let answer = request(nats_url, token, subject, &body).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        println!("{}", render_query(name, &answer));
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
