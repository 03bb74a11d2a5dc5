//! What a data dir holds for identity besides the log: the NATS keys the service signs and
//! connects with (`<data-dir>/nats/*.nk`, mode 0600), the bootstrap operator token
//! (`<data-dir>/operator.token`, mode 0600), and the nats-server configuration built from them.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use nkeys::KeyPair;

use crate::callout::SERVICE_ACCOUNT;
use crate::directory::{Directory, IdentityError};
use crate::principal::Role;

/// The file the bootstrap operator token is written to, under the data dir.
pub const OPERATOR_TOKEN_FILE: &str = "operator.token";

/// The NATS keys of a deployment.
#[derive(Debug)]
pub struct NatsKeys {
    /// Signs the auth callout's responses and user JWTs (an account key).
    pub callout_issuer: KeyPair,
    /// The service's own connections, in account IMS, exempt from the callout.
    pub service: KeyPair,
    /// The service's connection to the system account, to close a revoked credential's
    /// connections (`$SYS.REQ.SERVER.<id>.KICK`).
    pub system: KeyPair,
}

fn write_secret_file(path: &Path, contents: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

fn load_or_create(path: &Path, create: fn() -> KeyPair) -> std::io::Result<KeyPair> {
    let invalid = |e: nkeys::error::Error| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} does not hold an nkey seed: {e}", path.display()),
        )
    };
    match std::fs::read_to_string(path) {
        Ok(seed) => KeyPair::from_seed(seed.trim()).map_err(invalid),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let pair = create();
            write_secret_file(path, &pair.seed().map_err(invalid)?)?;
            Ok(pair)
        }
        Err(error) => Err(error),
    }
}

impl NatsKeys {
    /// Loads the keys of `data_dir`, creating any that are missing.
    pub fn load_or_create(data_dir: &Path) -> std::io::Result<Self> {
        let dir = data_dir.join("nats");
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        Ok(Self {
            callout_issuer: load_or_create(&dir.join("callout-issuer.nk"), KeyPair::new_account)?,
            service: load_or_create(&dir.join("service.nk"), KeyPair::new_user)?,
            system: load_or_create(&dir.join("system.nk"), KeyPair::new_user)?,
        })
    }

    /// A complete nats-server configuration: the IMS and system accounts, the service's users,
    /// and the auth callout that binds every other connection to a credential.
    pub fn server_config(&self, listen: &str) -> String {
        self.server_config_with(listen, &ServerExtras::default())
    }

    /// [`NatsKeys::server_config`] with JetStream and clustering as `extras` asks (replication,
    /// DESIGN.md section 12). JetStream is enabled for the IMS account only; tenants, operators
    /// and auditors have no permission on `$JS.API` or the log streams' subjects.
    pub fn server_config_with(&self, listen: &str, extras: &ServerExtras) -> String {
        let service = self.service.public_key();
        let system = self.system.public_key();
        let issuer = self.callout_issuer.public_key();
        let mut head = String::new();
        let mut account_jetstream = "";
        if let Some(name) = &extras.server_name {
            head.push_str(&format!("server_name: \"{name}\"\n"));
        }
        if let Some(dir) = &extras.jetstream_dir {
            head.push_str(&format!(
                "jetstream {{\n  store_dir: \"{}\"\n}}\n",
                dir.display()
            ));
            account_jetstream = "\n    jetstream: enabled";
        }
        if let Some(cluster) = &extras.cluster {
            let routes = cluster
                .routes
                .iter()
                .map(|route| format!("\"{route}\""))
                .collect::<Vec<_>>()
                .join(", ");
            head.push_str(&format!(
                "cluster {{\n  name: \"{}\"\n  listen: \"{}\"\n  routes: [ {routes} ]\n}}\n",
                cluster.name, cluster.listen
            ));
        }
        format!(
            r#"# nats-server configuration for ims, written by `imsd nats-config`.
# Every client is authenticated by imsd's auth callout (a token `ims_<key_id>_<secret>` as the
# connect token); only imsd's own nkey users bypass it.
listen: "{listen}"
{head}accounts {{
  {SERVICE_ACCOUNT} {{
    users: [ {{ nkey: "{service}" }} ]{account_jetstream}
  }}
  SYS {{
    users: [ {{ nkey: "{system}" }} ]
  }}
}}
system_account: SYS
authorization {{
  timeout: 5
  auth_callout {{
    issuer: "{issuer}"
    account: {SERVICE_ACCOUNT}
    auth_users: [ "{service}", "{system}" ]
  }}
}}
"#
        )
    }
}

/// What a nats-server configuration adds for replication: JetStream and a cluster.
#[derive(Clone, Debug, Default)]
pub struct ServerExtras {
    /// A unique name per server (required in a JetStream cluster).
    pub server_name: Option<String>,
    /// JetStream on, with its files here.
    pub jetstream_dir: Option<PathBuf>,
    pub cluster: Option<ClusterRoutes>,
}

/// A nats-server's place in a cluster.
#[derive(Clone, Debug)]
pub struct ClusterRoutes {
    pub name: String,
    /// Where this server listens for its peers (`host:port`).
    pub listen: String,
    /// The peers' cluster addresses (`nats-route://host:port`).
    pub routes: Vec<String>,
}

/// Where the bootstrap operator token of `data_dir` is.
pub fn operator_token_path(data_dir: &Path) -> PathBuf {
    data_dir.join(OPERATOR_TOKEN_FILE)
}

/// Issues the bootstrap operator credential and writes its token to `<data-dir>/operator.token`
/// (0600) when that file does not exist. Returns the path when it wrote one.
pub fn bootstrap_operator(
    data_dir: &Path,
    directory: &Directory,
    now_ms: u64,
) -> Result<Option<PathBuf>, IdentityError> {
    let path = operator_token_path(data_dir);
    if path.exists() {
        return Ok(None);
    }
    let (token, _, _) = directory.issue(Role::Operator, "bootstrap", now_ms)?;
    write_secret_file(&path, &format!("{}\n", token.reveal())).map_err(ims_log::LogError::from)?;
    Ok(Some(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_created_once_private_and_loaded_again() {
        let dir = tempfile::tempdir().unwrap();
        let first = NatsKeys::load_or_create(dir.path()).unwrap();
        let again = NatsKeys::load_or_create(dir.path()).unwrap();
        assert_eq!(first.service.public_key(), again.service.public_key());
        let mode = std::fs::metadata(dir.path().join("nats/service.nk"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let config = first.server_config("127.0.0.1:4222");
        assert!(config.contains(&first.callout_issuer.public_key()));
        assert!(!config.contains(&first.service.seed().unwrap()));
    }

    #[test]
    fn the_bootstrap_operator_token_is_written_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let directory = Directory::open(dir.path()).unwrap();
        let written = bootstrap_operator(dir.path(), &directory, 1).unwrap();
        assert!(written.is_some());
        assert_eq!(bootstrap_operator(dir.path(), &directory, 2).unwrap(), None);
        let path = operator_token_path(dir.path());
        let token = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            directory.authenticate(token.trim()).unwrap().role,
            Role::Operator
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
