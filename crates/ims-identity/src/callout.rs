//! The JWTs of nats-server's auth callout (2.10+), in the server's configuration mode.
//!
//! The server sends an authorization request (a JWT it signs with its own nkey) on
//! `$SYS.REQ.USER.AUTH`, holding the client's connect options (our token) and a fresh user nkey.
//! We answer with an authorization response signed by the callout issuer's account key, holding a
//! user JWT for that nkey with the principal's permissions, placed in account [`SERVICE_ACCOUNT`]
//! (the `aud`), or holding an error. A JWT is `base64url(header).base64url(claims).base64url(sig)`
//! with an ed25519 signature made by nkeys: no cryptography of our own.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use nkeys::KeyPair;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::principal::{Permissions, Principal};

/// The account every ims principal and the service live in.
pub const SERVICE_ACCOUNT: &str = "IMS";

/// The subject nats-server sends authorization requests on.
pub const AUTH_REQUEST_SUBJECT: &str = "$SYS.REQ.USER.AUTH";

const HEADER: &str = r#"{"typ":"JWT","alg":"ed25519-nkey"}"#;

/// What we read of an authorization request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthRequest {
    /// The server that asks; the response's audience.
    pub server_id: String,
    /// The nkey the user JWT must be issued to.
    pub user_nkey: String,
    /// The client's connection id on that server (for closing it on revocation).
    pub client_id: u64,
    /// The connect token, if the client sent one.
    pub token: Option<String>,
}

#[derive(Deserialize)]
struct RequestClaims {
    iss: String,
    nats: RequestNats,
}

#[derive(Deserialize)]
struct RequestNats {
    server_id: ServerId,
    user_nkey: String,
    #[serde(default)]
    client_info: ClientInfo,
    #[serde(default)]
    connect_opts: ConnectOpts,
}

#[derive(Deserialize)]
struct ServerId {
    id: String,
}

#[derive(Deserialize, Default)]
struct ClientInfo {
    #[serde(default)]
    id: u64,
}

#[derive(Deserialize, Default)]
struct ConnectOpts {
    #[serde(default)]
    auth_token: Option<String>,
}

/// Decodes an authorization request and checks that the server it names signed it.
pub fn decode_request(jwt: &[u8]) -> Result<AuthRequest, String> {
    let text = std::str::from_utf8(jwt).map_err(|_| "the request is not UTF-8".to_owned())?;
    let mut parts = text.trim().split('.');
    let (Some(header), Some(claims_b64), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("the request is not a JWT of three parts".into());
    };
    let claims_json = URL_SAFE_NO_PAD
        .decode(claims_b64)
        .map_err(|e| format!("the request's claims are not base64url: {e}"))?;
    let claims: RequestClaims = serde_json::from_slice(&claims_json)
        .map_err(|e| format!("the request's claims are not an authorization request: {e}"))?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|e| format!("the request's signature is not base64url: {e}"))?;
    let server = KeyPair::from_public_key(&claims.iss)
        .map_err(|e| format!("the request's issuer is not a server nkey: {e}"))?;
    server
        .verify(format!("{header}.{claims_b64}").as_bytes(), &signature)
        .map_err(|e| format!("the request's signature does not verify: {e}"))?;
    Ok(AuthRequest {
        server_id: claims.nats.server_id.id,
        user_nkey: claims.nats.user_nkey,
        client_id: claims.nats.client_info.id,
        token: claims.nats.connect_opts.auth_token,
    })
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Signs `claims` (completed with `iat`, `iss` and a `jti`) as a JWT of `issuer`.
fn sign(mut claims: Value, issuer: &KeyPair) -> String {
    claims["iat"] = json!(now_s());
    claims["iss"] = json!(issuer.public_key());
    claims["jti"] = json!(uuid::Uuid::now_v7().simple().to_string().to_uppercase());
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(HEADER),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = issuer
        .sign(signing_input.as_bytes())
        .expect("an account key pair with its seed signs");
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

fn permission_claims(permissions: &Permissions) -> Value {
    let mut publish = json!({ "allow": permissions.publish_allow });
    if !permissions.publish_deny.is_empty() {
        publish["deny"] = json!(permissions.publish_deny);
    }
    json!({
        "pub": publish,
        "sub": { "allow": permissions.subscribe_allow },
        "subs": -1, "data": -1, "payload": -1,
        "type": "user", "version": 2,
    })
}

/// The response that admits the client of `request` as `principal`, with the permissions of
/// its role under subject prefix `prefix`. The user is named after the key id, so the server's
/// connection lists show which credential a connection uses.
pub fn admit(
    request: &AuthRequest,
    principal: &Principal,
    prefix: &str,
    issuer: &KeyPair,
) -> String {
    let user = sign(
        json!({
            "sub": request.user_nkey,
            "aud": SERVICE_ACCOUNT,
            "name": principal.key_id.as_str(),
            "nats": permission_claims(&principal.permissions(prefix)),
        }),
        issuer,
    );
    response(request, json!({ "jwt": user }), issuer)
}

/// The response that refuses the client of `request`; `reason` reaches the server's log, never
/// the secret.
pub fn refuse(request: &AuthRequest, reason: &str, issuer: &KeyPair) -> String {
    response(request, json!({ "error": reason }), issuer)
}

fn response(request: &AuthRequest, mut nats: Value, issuer: &KeyPair) -> String {
    nats["type"] = json!("authorization_response");
    nats["version"] = json!(2);
    sign(
        json!({ "sub": request.user_nkey, "aud": request.server_id, "nats": nats }),
        issuer,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::principal::Role;
    use crate::token::KeyId;

    fn decode_claims(jwt: &str) -> Value {
        let claims = jwt.split('.').nth(1).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap()
    }

    fn request_signed_by(server: &KeyPair, user: &KeyPair) -> String {
        sign(
            json!({
                "sub": user.public_key(),
                "aud": "nats-authorization-request",
                "nats": {
                    "server_id": {"name": "n", "host": "127.0.0.1", "id": server.public_key()},
                    "user_nkey": user.public_key(),
                    "client_info": {"id": 7, "host": "127.0.0.1"},
                    "connect_opts": {"auth_token": "ims_x_y", "lang": "rust"},
                    "type": "authorization_request", "version": 2,
                }
            }),
            server,
        )
    }

    #[test]
    fn a_request_signed_by_its_server_decodes() {
        let (server, user) = (KeyPair::new_server(), KeyPair::new_user());
        let request = decode_request(request_signed_by(&server, &user).as_bytes()).unwrap();
        assert_eq!(request.user_nkey, user.public_key());
        assert_eq!(request.server_id, server.public_key());
        assert_eq!(request.client_id, 7);
        assert_eq!(request.token.as_deref(), Some("ims_x_y"));
    }

    #[test]
    fn a_request_with_a_forged_signature_is_refused() {
        let (server, user) = (KeyPair::new_server(), KeyPair::new_user());
        let jwt = request_signed_by(&server, &user);
        let mut parts: Vec<&str> = jwt.split('.').collect();
        let other = request_signed_by(&KeyPair::new_server(), &user);
        parts[2] = other.split('.').nth(2).unwrap();
        let error = decode_request(parts.join(".").as_bytes()).unwrap_err();
        assert!(error.contains("does not verify"), "{error}");
        assert!(decode_request(b"not a jwt").is_err());
    }

    #[test]
    fn an_admission_carries_a_user_jwt_for_the_requested_nkey_in_the_ims_account() {
        let (server, user, issuer) = (
            KeyPair::new_server(),
            KeyPair::new_user(),
            KeyPair::new_account(),
        );
        let request = decode_request(request_signed_by(&server, &user).as_bytes()).unwrap();
        let principal = Principal {
            key_id: KeyId::parse("0123456789abcdef").unwrap(),
            role: Role::Auditor,
        };
        let response = decode_claims(&admit(&request, &principal, "ims", &issuer));
        assert_eq!(response["aud"], server.public_key());
        assert_eq!(response["sub"], user.public_key());
        assert_eq!(response["iss"], issuer.public_key());
        assert_eq!(response["nats"]["type"], "authorization_response");
        let user_claims = decode_claims(response["nats"]["jwt"].as_str().unwrap());
        assert_eq!(user_claims["aud"], SERVICE_ACCOUNT);
        assert_eq!(user_claims["sub"], user.public_key());
        assert_eq!(
            user_claims["nats"]["sub"]["allow"][0],
            "_INBOX.0123456789abcdef.>"
        );
        let refused = decode_claims(&refuse(&request, "revoked", &issuer));
        assert_eq!(refused["nats"]["error"], "revoked");
    }
}
