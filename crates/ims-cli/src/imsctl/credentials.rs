//! `imsctl op credential issue|revoke|list`: the identity subjects `ims.v1.iam.*`.

use anyhow::Context as _;
use serde_json::json;

use super::args::*;
use super::transport::*;

/// `imsctl op credential …`: the identity subjects `ims.v1.iam.*`.
pub(crate) async fn credential(
    command: CredentialCommand,
    nats_url: &str,
    token: Option<&str>,
    prefix: &str,
    json: bool,
) -> anyhow::Result<std::process::ExitCode> {
    use ims_wire::iam::{IamReply, IssueCredential, RevokeCredential};
    let subjects = ims_wire::Subjects::new(prefix);
    let (subject, body) = match &command {
        CredentialCommand::Issue { role, for_tenant } => (
            subjects.iam("issue-credential"),
            serde_json::to_value(IssueCredential {
                role: role.as_str().to_owned(),
                tenant: for_tenant.clone(),
            })?,
        ),
        CredentialCommand::Revoke { key_id } => (
            subjects.iam("revoke-credential"),
            serde_json::to_value(RevokeCredential {
                key_id: key_id.clone(),
            })?,
        ),
        CredentialCommand::List => (subjects.iam("list-credentials"), json!({})),
    };
    let answer = request(nats_url, token, subject, serde_json::to_vec(&body)?).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    }
    let reply: IamReply =
        serde_json::from_value(answer).context("the identity service's answer")?;
    if let Some(error) = &reply.error {
        if !json {
            println!("error [{}]: {}", error.code.as_str(), error.message);
        }
        return Ok(std::process::ExitCode::from(1));
    }
    if json {
        return Ok(std::process::ExitCode::SUCCESS);
    }
    match command {
        CredentialCommand::Issue { .. } => {
            let view = reply
                .credential
                .context("an issue reply without its credential")?;
            println!(
                "issued {} credential {} (identity log position {}); the token, shown only now:\n{}",
                view.tenant.map_or(view.role.clone(), |t| format!("{} {t}", view.role)),
                view.key_id,
                reply.position.unwrap_or_default(),
                reply.token.unwrap_or_default()
            );
        }
        CredentialCommand::Revoke { key_id } => println!(
            "revoked {key_id} (identity log position {}); its connections are being closed",
            reply.position.unwrap_or_default()
        ),
        CredentialCommand::List => {
            let mut table = String::from("KEY ID            ROLE      TENANT        ISSUED BY                  ISSUED AT             REVOKED AT\n");
            for c in &reply.credentials {
                table.push_str(&format!(
                    "{:<17} {:<9} {:<13} {:<26} {:<21} {}\n",
                    c.key_id,
                    c.role,
                    c.tenant.as_deref().unwrap_or("-"),
                    c.issued_by,
                    c.issued_at,
                    c.revoked_at.as_deref().unwrap_or("-")
                ));
            }
            print!("{table}");
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}
