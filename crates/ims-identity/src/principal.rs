//! Principals and what each may reach on NATS (DESIGN.md section 10, the table).

use std::fmt;

use ims_domain::TenantId;
use serde::{Deserialize, Serialize};

use crate::token::KeyId;

/// Operator commands that only the copy saga sends, between the regions' writers. No client may
/// send them: they would let an operator fake a copy's outcome.
pub const INTERNAL_OPERATOR_COMMANDS: [&str; 2] = ["receive-copy", "record-copy-outcome"];

/// What a credential lets its holder be.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Acts and reads as one tenant, in every region.
    Tenant(TenantId),
    /// Registers tenants, sets quotas, publishes public images, reports builds, issues
    /// credentials; reads any tenant's queries.
    Operator,
    /// Reads: queries of any tenant, the log and live events. Changes nothing.
    Auditor,
}

impl Role {
    /// The role's name as the wire and the CLI spell it.
    pub fn name(&self) -> &'static str {
        match self {
            Role::Tenant(_) => "tenant",
            Role::Operator => "operator",
            Role::Auditor => "auditor",
        }
    }

    /// Builds a role from its wire name and, for `tenant`, the tenant id.
    pub fn from_parts(role: &str, tenant: Option<&str>) -> Result<Self, String> {
        match (role, tenant) {
            ("tenant", Some(tenant)) => TenantId::parse(tenant)
                .map(Role::Tenant)
                .map_err(|e| e.message),
            ("tenant", None) => Err("role tenant needs a tenant id (\"tenant\": \"acme\")".into()),
            ("operator" | "auditor", Some(tenant)) => Err(format!(
                "role {role} is not bound to a tenant; drop \"tenant\": {tenant:?}"
            )),
            ("operator", None) => Ok(Role::Operator),
            ("auditor", None) => Ok(Role::Auditor),
            (other, _) => Err(format!(
                "role {other:?} is not known; expected tenant, operator or auditor"
            )),
        }
    }

    pub fn tenant(&self) -> Option<&TenantId> {
        match self {
            Role::Tenant(tenant) => Some(tenant),
            _ => None,
        }
    }

    /// Whether the role may read what belongs to `tenant` (HTTP paths, queries).
    pub fn may_read_tenant(&self, tenant: &TenantId) -> bool {
        match self {
            Role::Tenant(own) => own == tenant,
            Role::Operator | Role::Auditor => true,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Tenant(tenant) => write!(f, "tenant {tenant}"),
            other => f.write_str(other.name()),
        }
    }
}

/// An authenticated caller: which credential, and what it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub key_id: KeyId,
    pub role: Role,
}

/// Subject patterns a NATS user may publish and subscribe to; everything else is denied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Permissions {
    pub publish_allow: Vec<String>,
    pub publish_deny: Vec<String>,
    pub subscribe_allow: Vec<String>,
}

impl Principal {
    /// The inbox prefix this principal's client must use; its replies arrive under it.
    pub fn inbox_prefix(&self) -> String {
        format!("_INBOX.{}", self.key_id)
    }

    /// The NATS permissions of the principal under subject prefix `prefix` (`ims` by default).
    pub fn permissions(&self, prefix: &str) -> Permissions {
        let inbox = format!("{}.>", self.inbox_prefix());
        let v1 = format!("{prefix}.v1");
        match &self.role {
            Role::Tenant(tenant) => Permissions {
                publish_allow: vec![
                    format!("{v1}.*.cmd.{tenant}.*"),
                    format!("{v1}.*.q.{tenant}.*"),
                ],
                publish_deny: Vec::new(),
                subscribe_allow: vec![inbox, format!("{v1}.*.feed.{tenant}")],
            },
            Role::Operator => Permissions {
                publish_allow: vec![
                    format!("{v1}.*.op.*"),
                    format!("{v1}.*.q.*.*"),
                    format!("{v1}.iam.*"),
                ],
                publish_deny: INTERNAL_OPERATOR_COMMANDS
                    .iter()
                    .map(|command| format!("{v1}.*.op.{command}"))
                    .collect(),
                subscribe_allow: vec![inbox, format!("{v1}.*.feed.*")],
            },
            Role::Auditor => Permissions {
                publish_allow: vec![
                    format!("{v1}.*.log.read"),
                    format!("{v1}.*.audit.*"),
                    format!("{v1}.*.q.*.*"),
                ],
                publish_deny: Vec::new(),
                subscribe_allow: vec![inbox, format!("{v1}.*.events")],
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(role: Role) -> Principal {
        Principal {
            key_id: KeyId::parse("abcdefgh01234567").unwrap(),
            role,
        }
    }

    #[test]
    fn a_tenant_publishes_only_under_its_own_tenant_token() {
        let acme = TenantId::parse("acme").unwrap();
        let permissions = principal(Role::Tenant(acme)).permissions("ims");
        assert_eq!(
            permissions.publish_allow,
            ["ims.v1.*.cmd.acme.*", "ims.v1.*.q.acme.*"]
        );
        assert_eq!(
            permissions.subscribe_allow,
            ["_INBOX.abcdefgh01234567.>", "ims.v1.*.feed.acme"]
        );
    }

    #[test]
    fn an_operator_cannot_send_the_copy_sagas_internal_commands() {
        let permissions = principal(Role::Operator).permissions("ims");
        assert!(permissions
            .publish_deny
            .contains(&"ims.v1.*.op.receive-copy".to_owned()));
        assert!(!permissions
            .subscribe_allow
            .iter()
            .any(|s| s.contains("cmd")));
    }

    #[test]
    fn roles_are_built_from_their_wire_names_with_clear_refusals() {
        assert_eq!(Role::from_parts("auditor", None).unwrap(), Role::Auditor);
        assert!(Role::from_parts("tenant", None)
            .unwrap_err()
            .contains("needs a tenant"));
        assert!(Role::from_parts("operator", Some("acme"))
            .unwrap_err()
            .contains("not bound"));
        assert!(Role::from_parts("root", None)
            .unwrap_err()
            .contains("tenant, operator or auditor"));
        assert!(Role::from_parts("tenant", Some("a.b")).is_err());
    }
}
