//! The identity role over NATS (DESIGN.md section 10): answers nats-server's auth callout,
//! serves `ims.v1.iam.*` (issue, revoke and list credentials; authenticate for the HTTP role of
//! another process), and closes a revoked credential's open connections. Registered with the
//! NATS micro-services API as `ims-identity`.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::service::ServiceExt;
use bytes::Bytes;
use futures::StreamExt;
use ims_identity::callout::{self, AUTH_REQUEST_SUBJECT};
use ims_identity::setup::NatsKeys;
use ims_identity::{Credential, Directory, IdentityError, KeyId, Principal, Role};
use ims_wire::iam::{Authenticate, CredentialView, IamReply, IssueCredential, RevokeCredential};
use ims_wire::{Subjects, WireError, WireErrorCode};

use ims_bus::{
    read_log, reply_bytes_max, respond_log_read, stop_taking, RoleError, SERVICE_VERSION,
};

/// Connections remembered per credential, to close them when it is revoked. A client that opens
/// more than this many keeps only its newest ones closable at once; the rest end at reconnect.
pub const CONNECTIONS_PER_CREDENTIAL_MAX: usize = 1024;

/// How long the HTTP role of another process trusts an answer of `authenticate`: a revoked
/// token stops working over HTTP within this time.
pub const REMOTE_AUTHENTICATION_TTL: Duration = Duration::from_secs(5);

/// Answers kept by [`Authenticator::Remote`]; past this the cache is emptied.
const REMOTE_CACHE_ENTRIES_MAX: usize = 10_000;

/// How long a kick request to a nats-server may take.
const KICK_TIMEOUT: Duration = Duration::from_secs(2);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A credential as the wire lists it.
pub fn credential_view(credential: &Credential) -> CredentialView {
    CredentialView {
        key_id: credential.key_id.to_string(),
        role: credential.role.name().to_owned(),
        tenant: credential.role.tenant().map(|t| t.to_string()),
        issued_by: credential.issued_by.clone(),
        issued_at: ims_wire::time::rfc3339(credential.issued_at_ms),
        revoked_at: credential.revoked_at_ms.map(ims_wire::time::rfc3339),
    }
}

fn invalid(message: impl Into<String>) -> WireError {
    WireError::new(WireErrorCode::InvalidArgument, message)
}

fn identity_error(error: IdentityError) -> WireError {
    match error {
        IdentityError::UnknownCredential(_) => {
            WireError::new(WireErrorCode::NotFound, error.to_string())
        }
        IdentityError::Log(_) => WireError::new(WireErrorCode::Unavailable, error.to_string()),
        other => WireError::new(WireErrorCode::Forbidden, other.to_string()),
    }
}

/// The identity role of this process.
#[derive(Debug)]
pub struct IdentityService {
    directory: Directory,
    keys: Arc<NatsKeys>,
    subjects: Subjects,
    /// Per credential, the (server id, client id) of the connections it opened.
    connections: Mutex<HashMap<KeyId, VecDeque<(String, u64)>>>,
}

impl IdentityService {
    pub fn new(directory: Directory, keys: Arc<NatsKeys>, subjects: Subjects) -> Self {
        Self {
            directory,
            keys,
            subjects,
            connections: Mutex::new(HashMap::new()),
        }
    }

    /// The callout's answer to one authorization request.
    fn answer_callout(&self, payload: &[u8]) -> Option<String> {
        let request = match callout::decode_request(payload) {
            Ok(request) => request,
            Err(problem) => {
                tracing::warn!(%problem, "an auth callout request could not be read; not answered");
                return None;
            }
        };
        let issuer = &self.keys.callout_issuer;
        let Some(token) = request.token.as_deref() else {
            metrics::counter!("ims_auth_total", "outcome" => "refused").increment(1);
            return Some(callout::refuse(
                &request,
                "no credential: connect with the token ims_<key_id>_<secret> as the NATS token",
                issuer,
            ));
        };
        match self.directory.authenticate(token) {
            Ok(principal) => {
                metrics::counter!("ims_auth_total", "outcome" => "admitted").increment(1);
                let mut connections = self.connections.lock().expect("connections lock");
                let known = connections.entry(principal.key_id.clone()).or_default();
                if known.len() == CONNECTIONS_PER_CREDENTIAL_MAX {
                    known.pop_front();
                }
                known.push_back((request.server_id.clone(), request.client_id));
                Some(callout::admit(
                    &request,
                    &principal,
                    &self.subjects.prefix,
                    issuer,
                ))
            }
            Err(error) => {
                metrics::counter!("ims_auth_total", "outcome" => "refused").increment(1);
                tracing::info!(%error, "a connection was refused");
                Some(callout::refuse(&request, &error.to_string(), issuer))
            }
        }
    }

    /// Who sent an identity request, as far as the reply subject tells: a client may only read
    /// replies under `_INBOX.<its key id>`, so that prefix names the credential that will see
    /// the answer.
    fn requester(&self, reply: Option<&str>) -> String {
        let key_id = reply
            .and_then(|subject| subject.strip_prefix("_INBOX."))
            .and_then(|rest| rest.split('.').next())
            .and_then(|token| KeyId::parse(token).ok());
        match key_id.and_then(|id| self.directory.credential(&id)) {
            Some(credential) => format!("{} {}", credential.role.name(), credential.key_id),
            None => "service".to_owned(),
        }
    }

    async fn issue(&self, payload: &[u8], reply: Option<&str>) -> IamReply {
        let request: IssueCredential = match serde_json::from_slice(payload) {
            Ok(request) => request,
            Err(e) => return IamReply::error(invalid(format!("issue-credential expects {{\"role\": \"tenant\"|\"operator\"|\"auditor\", \"tenant\": id}}: {e}"))),
        };
        let role = match Role::from_parts(&request.role, request.tenant.as_deref()) {
            Ok(role) => role,
            Err(message) => return IamReply::error(invalid(message)),
        };
        let (directory, by) = (self.directory.clone(), self.requester(reply));
        let issued =
            tokio::task::spawn_blocking(move || directory.issue(role, &by, now_ms())).await;
        match issued {
            Ok(Ok((token, credential, position))) => {
                tracing::info!(key_id = %credential.key_id, role = %credential.role, "credential issued");
                IamReply {
                    ok: true,
                    key_id: Some(credential.key_id.to_string()),
                    token: Some(token.reveal()),
                    position: Some(position),
                    credential: Some(credential_view(&credential)),
                    ..IamReply::default()
                }
            }
            Ok(Err(error)) => IamReply::error(identity_error(error)),
            Err(panic) => panic!("issuing a credential panicked: {panic}"),
        }
    }

    async fn revoke(
        &self,
        payload: &[u8],
        reply: Option<&str>,
        system: Option<&async_nats::Client>,
    ) -> IamReply {
        let request: RevokeCredential = match serde_json::from_slice(payload) {
            Ok(request) => request,
            Err(e) => {
                return IamReply::error(invalid(format!(
                    "revoke-credential expects {{\"key_id\": \"…\"}}: {e}"
                )))
            }
        };
        let key_id = match KeyId::parse(&request.key_id) {
            Ok(key_id) => key_id,
            Err(message) => return IamReply::error(invalid(message)),
        };
        let (directory, by, id) = (
            self.directory.clone(),
            self.requester(reply),
            key_id.clone(),
        );
        let revoked = tokio::task::spawn_blocking(move || directory.revoke(&id, &by, now_ms()))
            .await
            .expect("revoking a credential panicked");
        let (credential, position) = match revoked {
            Ok(done) => done,
            Err(error) => return IamReply::error(identity_error(error)),
        };
        tracing::info!(%key_id, "credential revoked; closing its connections");
        let open = self
            .connections
            .lock()
            .expect("connections lock")
            .remove(&key_id)
            .unwrap_or_default();
        if let Some(system) = system {
            for (server_id, client_id) in open {
                kick(system, &server_id, client_id).await;
            }
        }
        IamReply {
            ok: true,
            key_id: Some(key_id.to_string()),
            position: Some(position),
            credential: Some(credential_view(&credential)),
            ..IamReply::default()
        }
    }

    fn list(&self) -> IamReply {
        IamReply {
            ok: true,
            credentials: self.directory.list().iter().map(credential_view).collect(),
            ..IamReply::default()
        }
    }

    fn authenticate(&self, payload: &[u8]) -> IamReply {
        let request: Authenticate = match serde_json::from_slice(payload) {
            Ok(request) => request,
            Err(e) => {
                return IamReply::error(invalid(format!(
                    "authenticate expects {{\"token\": \"ims_…\"}}: {e}"
                )))
            }
        };
        match self.directory.authenticate(&request.token) {
            Ok(principal) => {
                let credential = self.directory.credential(&principal.key_id);
                IamReply {
                    ok: true,
                    key_id: Some(principal.key_id.to_string()),
                    credential: credential.as_ref().map(credential_view),
                    ..IamReply::default()
                }
            }
            Err(error) => IamReply::error(identity_error(error)),
        }
    }
}

/// Asks the nats-server `server_id` to close connection `client_id`.
async fn kick(system: &async_nats::Client, server_id: &str, client_id: u64) {
    let subject = format!("$SYS.REQ.SERVER.{server_id}.KICK");
    let payload = Bytes::from(format!("{{\"cid\":{client_id}}}"));
    match tokio::time::timeout(KICK_TIMEOUT, system.request(subject, payload)).await {
        Ok(Ok(_)) => tracing::debug!(server_id, client_id, "revoked connection closed"),
        Ok(Err(error)) => tracing::warn!(%error, client_id, "closing a revoked connection failed"),
        Err(_) => tracing::warn!(client_id, "closing a revoked connection timed out"),
    }
}

/// The identity role's subscriptions, made before anything is served: a client that connects
/// once they exist is answered.
pub struct IdentityEndpoints {
    client: async_nats::Client,
    system: Option<async_nats::Client>,
    identity: Arc<IdentityService>,
    callouts: async_nats::Subscriber,
    service: async_nats::service::Service,
    issue: async_nats::service::endpoint::Endpoint,
    revoke: async_nats::service::endpoint::Endpoint,
    list: async_nats::service::endpoint::Endpoint,
    authenticate: async_nats::service::endpoint::Endpoint,
    /// `ims.v1.iam.log.read`: the identity log for auditors, as a region's `log.read`.
    log_read: async_nats::service::endpoint::Endpoint,
}

impl std::fmt::Debug for IdentityEndpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityEndpoints").finish_non_exhaustive()
    }
}

impl IdentityEndpoints {
    /// Subscribes to the auth callout and `ims.v1.iam.*`, and waits until the server has the
    /// subscriptions. `system` is a connection to the system account, used to close revoked
    /// credentials' connections.
    pub async fn start(
        client: async_nats::Client,
        system: Option<async_nats::Client>,
        identity: Arc<IdentityService>,
    ) -> Result<Self, RoleError> {
        let callouts = client
            .queue_subscribe(AUTH_REQUEST_SUBJECT, "ims-auth".to_owned())
            .await
            .map_err(|e| RoleError::nats("subscribing to the auth callout", e))?;
        let service = client
            .service_builder()
            .description("ims identity: credentials and the NATS auth callout")
            .start("ims-identity", SERVICE_VERSION)
            .await
            .map_err(|e| RoleError::nats("registering the ims-identity service", e))?;
        let add = |name: &'static str| {
            let builder = service.endpoint_builder().name(name);
            let subject = identity.subjects.iam(&name.replace("log-read", "log.read"));
            async move {
                builder
                    .add(subject)
                    .await
                    .map_err(|e| RoleError::nats(format!("adding endpoint {name}"), e))
            }
        };
        let (issue, revoke) = (
            add("issue-credential").await?,
            add("revoke-credential").await?,
        );
        let (list, authenticate) = (add("list-credentials").await?, add("authenticate").await?);
        let log_read = add("log-read").await?;
        client
            .flush()
            .await
            .map_err(|e| RoleError::nats("flushing the identity subscriptions", e))?;
        tracing::info!(
            credentials = identity.directory.list().len(),
            "identity service ready"
        );
        Ok(Self {
            client,
            system,
            identity,
            callouts,
            service,
            issue,
            revoke,
            list,
            authenticate,
            log_read,
        })
    }

    /// Serves the identity role until `shutdown` completes.
    pub async fn serve(mut self, shutdown: impl Future<Output = ()>) -> Result<(), RoleError> {
        let identity = self.identity.clone();
        tokio::pin!(shutdown);
        let mut stopping = false;
        loop {
            let (request, answer) = tokio::select! {
                _ = &mut shutdown, if !stopping => {
                    stop_taking([
                        &mut self.issue,
                        &mut self.revoke,
                        &mut self.list,
                        &mut self.authenticate,
                        &mut self.log_read,
                    ])
                    .await;
                    // Not `drain`, which ends the stream only once the server answers: with
                    // NATS down, the role would wait for it to come back.
                    if let Err(error) = self.callouts.unsubscribe().await {
                        tracing::debug!(%error, "unsubscribing the auth callouts failed");
                    }
                    stopping = true;
                    continue;
                }
                Some(message) = self.callouts.next() => {
                    if let (Some(reply), Some(answer)) = (message.reply, identity.answer_callout(&message.payload)) {
                        if let Err(error) = self.client.publish(reply, Bytes::from(answer)).await {
                            tracing::warn!(%error, "answering the auth callout failed");
                        }
                    }
                    continue;
                }
                Some(request) = self.issue.next() => {
                    let reply = request.message.reply.as_deref().map(str::to_owned);
                    let answer = identity.issue(&request.message.payload, reply.as_deref()).await;
                    (request, answer)
                }
                Some(request) = self.revoke.next() => {
                    let reply = request.message.reply.as_deref().map(str::to_owned);
                    let answer = identity.revoke(&request.message.payload, reply.as_deref(), self.system.as_ref()).await;
                    (request, answer)
                }
                Some(request) = self.list.next() => (request, identity.list()),
                Some(request) = self.log_read.next() => {
                    let answer = read_log(
                        identity.directory.log(),
                        &request.message.payload,
                        reply_bytes_max(&self.client),
                    );
                    if let Err(error) = respond_log_read(request, answer).await {
                        tracing::debug!(%error, "answering the identity log.read failed");
                    }
                    continue;
                }
                Some(request) = self.authenticate.next() => {
                    let answer = identity.authenticate(&request.message.payload);
                    (request, answer)
                }
                else => break,
            };
            if let Err(error) = request.respond(Ok(Bytes::from(answer.to_json()))).await {
                tracing::debug!(%error, "answering an identity request failed");
            }
        }
        self.service
            .stop()
            .await
            .map_err(|e| RoleError::nats("stopping the ims-identity service", e))?;
        Ok(())
    }
}

/// Why an HTTP caller is refused.
#[derive(Debug)]
pub enum AuthFailure {
    /// No usable credential (missing, malformed, unknown, revoked): 401.
    Unauthenticated(String),
    /// The credential could not be checked (the identity role unreachable): 503.
    Unavailable(String),
}

/// Answers of the identity role kept by [`Authenticator::Remote`], by SHA-256 of the token (the
/// token itself is not kept), with when they were received.
pub type RemoteAnswers = HashMap<[u8; 32], (Instant, Result<Principal, String>)>;

/// Checks bearer tokens for the HTTP role: against the directory when the identity role runs in
/// this process, else by asking it over NATS (answers kept for [`REMOTE_AUTHENTICATION_TTL`]).
#[derive(Clone, Debug)]
pub enum Authenticator {
    Local(Directory),
    Remote {
        client: async_nats::Client,
        subject: String,
        cache: Arc<Mutex<RemoteAnswers>>,
    },
    /// `--insecure-no-auth`: every caller may read everything.
    Open,
}

impl Authenticator {
    /// The principal holding `token`; `Ok(None)` only when auth is off.
    pub async fn authenticate(
        &self,
        token: Option<&str>,
    ) -> Result<Option<Principal>, AuthFailure> {
        if matches!(self, Authenticator::Open) {
            return Ok(None);
        }
        let token = token.ok_or_else(|| {
            AuthFailure::Unauthenticated(
                "no credential: send Authorization: Bearer ims_<key_id>_<secret>".into(),
            )
        })?;
        match self {
            Authenticator::Open => Ok(None),
            Authenticator::Local(directory) => directory
                .authenticate(token)
                .map(Some)
                .map_err(|e| AuthFailure::Unauthenticated(e.to_string())),
            Authenticator::Remote {
                client,
                subject,
                cache,
            } => {
                use sha2::{Digest, Sha256};
                let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
                if let Some((at, answer)) = cache.lock().expect("cache lock").get(&key) {
                    if at.elapsed() < REMOTE_AUTHENTICATION_TTL {
                        return answer
                            .clone()
                            .map(Some)
                            .map_err(AuthFailure::Unauthenticated);
                    }
                }
                let answer = ask_identity(client, subject, token).await?;
                let mut cache = cache.lock().expect("cache lock");
                if cache.len() >= REMOTE_CACHE_ENTRIES_MAX {
                    cache.clear();
                }
                cache.insert(key, (Instant::now(), answer.clone()));
                answer.map(Some).map_err(AuthFailure::Unauthenticated)
            }
        }
    }
}

async fn ask_identity(
    client: &async_nats::Client,
    subject: &str,
    token: &str,
) -> Result<Result<Principal, String>, AuthFailure> {
    let payload = serde_json::to_vec(&Authenticate {
        token: token.to_owned(),
    })
    .expect("a request serialises");
    let unavailable = |e: String| AuthFailure::Unavailable(format!("the identity service: {e}"));
    let message = tokio::time::timeout(
        Duration::from_secs(5),
        client.request(subject.to_owned(), Bytes::from(payload)),
    )
    .await
    .map_err(|_| unavailable("no answer within 5 s".into()))?
    .map_err(|e| unavailable(e.to_string()))?;
    let reply: IamReply =
        serde_json::from_slice(&message.payload).map_err(|e| unavailable(e.to_string()))?;
    if let Some(error) = reply.error {
        return Ok(Err(error.message));
    }
    let credential = reply
        .credential
        .ok_or_else(|| unavailable("an answer without the credential".into()))?;
    let role =
        Role::from_parts(&credential.role, credential.tenant.as_deref()).map_err(unavailable)?;
    let key_id = KeyId::parse(&credential.key_id).map_err(unavailable)?;
    Ok(Ok(Principal { key_id, role }))
}
