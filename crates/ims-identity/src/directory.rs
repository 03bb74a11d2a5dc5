//! The identity log (`<data-dir>/iam/log`) and the credentials folded from it.
//!
//! The log is an ims-log [`EventLog`] of region `iam`, with the same guarantees as a region's:
//! appends are durable before they are answered, and events are hash-chained, so `imsctl audit`
//! shows who was granted what and when. Each credential is a stream `credential/<key_id>`:
//! `credential_issued` (version 1), then perhaps `credential_revoked` (version 2). Secrets are
//! never written; only their SHA-256 digests are.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use ims_log::{Appended, EventLog, LogError, NewCommand, NewEvent};
use serde::{Deserialize, Serialize};

use crate::principal::{Principal, Role};
use crate::token::{digests_equal, KeyId, Token};

/// The region name of the identity log; never a valid region id of the catalog.
pub const IAM_LOG_REGION: &str = "iam";

/// Schema version of the identity events.
const IAM_SCHEMA_VERSION: u16 = 1;

/// Why a caller is not who it says, or an identity command failed.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("credential {0} is not known")]
    UnknownCredential(KeyId),
    #[error("credential {0} was revoked")]
    Revoked(KeyId),
    #[error("the secret does not match credential {0}")]
    WrongSecret(KeyId),
    #[error("the identity log failed: {0}")]
    Log(#[from] LogError),
}

/// One event of the identity log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IamEvent {
    CredentialIssued {
        key_id: String,
        role: Role,
        secret_sha256: [u8; 32],
        issued_by: String,
    },
    CredentialRevoked {
        key_id: String,
        revoked_by: String,
    },
}

impl IamEvent {
    pub fn type_tag(&self) -> &'static str {
        match self {
            IamEvent::CredentialIssued { .. } => "credential_issued",
            IamEvent::CredentialRevoked { .. } => "credential_revoked",
        }
    }
}

/// Decodes the identity event an envelope of the identity log carries.
pub fn decode_iam_event(envelope: &ims_log::Envelope) -> Result<IamEvent, LogError> {
    ims_log::decode(&envelope.body.payload, || {
        format!("identity event at position {}", envelope.position())
    })
}

/// A credential as listed: everything but the secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    pub key_id: KeyId,
    pub role: Role,
    pub issued_by: String,
    pub issued_at_ms: u64,
    pub revoked_at_ms: Option<u64>,
    secret_sha256: [u8; 32],
}

/// The credentials of a deployment. Cheap to clone; reads run alongside one writer.
#[derive(Clone, Debug)]
pub struct Directory {
    log: EventLog,
    credentials: Arc<RwLock<BTreeMap<KeyId, Credential>>>,
}

/// Where the identity log of `data_dir` lives.
pub fn iam_log_path(data_dir: &Path) -> PathBuf {
    data_dir.join("iam").join("log")
}

impl Directory {
    /// Opens (or creates) the identity log under `data_dir` and folds its credentials.
    pub fn open(data_dir: &Path) -> Result<Self, IdentityError> {
        let path = iam_log_path(data_dir);
        std::fs::create_dir_all(&path).map_err(LogError::from)?;
        let log = EventLog::open(&path, IAM_LOG_REGION)?;
        let mut credentials = BTreeMap::new();
        for envelope in log.iter_from(1) {
            let envelope = envelope?;
            let at_ms = envelope.body.recorded_at_ms;
            match decode_iam_event(&envelope)? {
                IamEvent::CredentialIssued {
                    key_id,
                    role,
                    secret_sha256,
                    issued_by,
                } => {
                    let key_id = KeyId::parse(&key_id).map_err(|problem| LogError::Broken {
                        position: envelope.position(),
                        problem,
                    })?;
                    credentials.insert(
                        key_id.clone(),
                        Credential {
                            key_id,
                            role,
                            issued_by,
                            issued_at_ms: at_ms,
                            revoked_at_ms: None,
                            secret_sha256,
                        },
                    );
                }
                IamEvent::CredentialRevoked { key_id, .. } => {
                    if let Some(credential) = KeyId::parse(&key_id)
                        .ok()
                        .and_then(|id| credentials.get_mut(&id))
                    {
                        credential.revoked_at_ms = Some(at_ms);
                    }
                }
            }
        }
        Ok(Self {
            log,
            credentials: Arc::new(RwLock::new(credentials)),
        })
    }

    /// The identity log itself, for audits.
    pub fn log(&self) -> &EventLog {
        &self.log
    }

    /// Who holds `token`, if it is a live credential.
    pub fn authenticate(&self, token: &str) -> Result<Principal, IdentityError> {
        let token = Token::parse(token).map_err(IdentityError::Malformed)?;
        let credentials = self.credentials.read().expect("credentials lock");
        let credential = credentials
            .get(&token.key_id)
            .ok_or_else(|| IdentityError::UnknownCredential(token.key_id.clone()))?;
        if !digests_equal(&credential.secret_sha256, &token.secret_digest()) {
            return Err(IdentityError::WrongSecret(token.key_id));
        }
        if credential.revoked_at_ms.is_some() {
            return Err(IdentityError::Revoked(token.key_id));
        }
        Ok(Principal {
            key_id: token.key_id,
            role: credential.role.clone(),
        })
    }

    /// Issues a credential for `role`, durably, and returns its token (the only time the secret
    /// exists outside its holder) and the log position of the grant. Blocks on the fsync.
    pub fn issue(
        &self,
        role: Role,
        issued_by: &str,
        now_ms: u64,
    ) -> Result<(Token, Credential, u64), IdentityError> {
        let token = Token::generate();
        let event = IamEvent::CredentialIssued {
            key_id: token.key_id.to_string(),
            role: role.clone(),
            secret_sha256: token.secret_digest(),
            issued_by: issued_by.to_owned(),
        };
        let mut credentials = self.credentials.write().expect("credentials lock");
        let position = self.append(&token.key_id, 1, &event, issued_by, now_ms)?;
        let credential = Credential {
            key_id: token.key_id.clone(),
            role,
            issued_by: issued_by.to_owned(),
            issued_at_ms: now_ms,
            revoked_at_ms: None,
            secret_sha256: token.secret_digest(),
        };
        credentials.insert(token.key_id.clone(), credential.clone());
        Ok((token, credential, position))
    }

    /// Revokes a credential, durably. Revoking one that is revoked already changes nothing and
    /// answers the position of the earlier revocation's log head.
    pub fn revoke(
        &self,
        key_id: &KeyId,
        revoked_by: &str,
        now_ms: u64,
    ) -> Result<(Credential, u64), IdentityError> {
        let mut credentials = self.credentials.write().expect("credentials lock");
        let credential = credentials
            .get_mut(key_id)
            .ok_or_else(|| IdentityError::UnknownCredential(key_id.clone()))?;
        if credential.revoked_at_ms.is_some() {
            return Ok((credential.clone(), self.log.head_position()));
        }
        let event = IamEvent::CredentialRevoked {
            key_id: key_id.to_string(),
            revoked_by: revoked_by.to_owned(),
        };
        let position = self.append(key_id, 2, &event, revoked_by, now_ms)?;
        credential.revoked_at_ms = Some(now_ms);
        Ok((credential.clone(), position))
    }

    /// The credential `key_id` names, revoked or not.
    pub fn credential(&self, key_id: &KeyId) -> Option<Credential> {
        let credentials = self.credentials.read().expect("credentials lock");
        credentials.get(key_id).cloned()
    }

    /// Every credential ever issued, revoked ones included, by key id.
    pub fn list(&self) -> Vec<Credential> {
        let credentials = self.credentials.read().expect("credentials lock");
        credentials.values().cloned().collect()
    }

    /// Whether any live operator credential exists.
    pub fn has_live_operator(&self) -> bool {
        self.list()
            .iter()
            .any(|c| c.role == Role::Operator && c.revoked_at_ms.is_none())
    }

    fn append(
        &self,
        key_id: &KeyId,
        stream_version: u64,
        event: &IamEvent,
        actor: &str,
        now_ms: u64,
    ) -> Result<u64, IdentityError> {
        let command = NewCommand {
            command_id: None,
            actor: actor.to_owned(),
            recorded_at_ms: now_ms,
            events: vec![NewEvent {
                stream: format!("credential/{key_id}"),
                stream_version,
                event_type: event.type_tag().to_owned(),
                schema_version: IAM_SCHEMA_VERSION,
                payload: ims_log::encode(event),
            }],
            reply: Vec::new(),
            snapshots: Vec::new(),
            digest: None,
        };
        match self.log.append(&[command])?.pop() {
            Some(Appended::New { last_position, .. }) => Ok(last_position),
            other => Err(IdentityError::Log(LogError::Broken {
                position: self.log.head_position(),
                problem: format!("the identity log refused credential {key_id}: {other:?}"),
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issued_credential_authenticates_until_it_is_revoked_and_both_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let directory = Directory::open(dir.path()).unwrap();
        let (token, _, position) = directory
            .issue(Role::Auditor, "operator test", 1_000)
            .unwrap();
        assert_eq!(position, 1);
        let principal = directory.authenticate(&token.reveal()).unwrap();
        assert_eq!(principal.role, Role::Auditor);
        directory
            .revoke(&token.key_id, "operator test", 2_000)
            .unwrap();
        assert!(matches!(
            directory.authenticate(&token.reveal()),
            Err(IdentityError::Revoked(_))
        ));
        drop(directory);
        let reopened = Directory::open(dir.path()).unwrap();
        assert!(matches!(
            reopened.authenticate(&token.reveal()),
            Err(IdentityError::Revoked(_))
        ));
        assert_eq!(reopened.list()[0].revoked_at_ms, Some(2_000));
    }

    #[test]
    fn a_wrong_secret_or_unknown_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let directory = Directory::open(dir.path()).unwrap();
        let (token, _, _) = directory.issue(Role::Operator, "bootstrap", 1).unwrap();
        let forged = format!("ims_{}_{}", token.key_id, "0".repeat(64));
        assert!(matches!(
            directory.authenticate(&forged),
            Err(IdentityError::WrongSecret(_))
        ));
        let unknown = Token::generate();
        assert!(matches!(
            directory.authenticate(&unknown.reveal()),
            Err(IdentityError::UnknownCredential(_))
        ));
        assert!(matches!(
            directory.authenticate("garbage"),
            Err(IdentityError::Malformed(_))
        ));
    }

    #[test]
    fn the_log_never_holds_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let directory = Directory::open(dir.path()).unwrap();
        let (token, _, _) = directory.issue(Role::Operator, "bootstrap", 1).unwrap();
        let secret = token.reveal();
        let secret = secret.rsplit('_').next().unwrap();
        drop(directory);
        for entry in walk(dir.path()) {
            let bytes = std::fs::read(&entry).unwrap();
            assert!(
                !bytes
                    .windows(secret.len())
                    .any(|window| window == secret.as_bytes()),
                "{} holds the secret",
                entry.display()
            );
        }
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files.extend(walk(&path));
            } else {
                files.push(path);
            }
        }
        files
    }
}
