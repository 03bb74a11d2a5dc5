//! NATS subject names (DESIGN.md section 4). Every token that comes from outside is a validated
//! id, so no subject built here can hold a wildcard or an extra token.

use ims_domain::{RegionId, TenantId};

/// The subject names of one deployment, under its prefix (`ims` unless configured).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subjects {
    pub prefix: String,
}

impl Default for Subjects {
    fn default() -> Self {
        Self {
            prefix: "ims".to_owned(),
        }
    }
}

impl Subjects {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    fn region(&self, region: &RegionId) -> String {
        format!("{}.v1.{region}", self.prefix)
    }

    /// `ims.v1.<region>.cmd.<tenant>.<command>`
    pub fn tenant_command(&self, region: &RegionId, tenant: &TenantId, command: &str) -> String {
        format!("{}.cmd.{tenant}.{command}", self.region(region))
    }

    /// What the command service listens on for tenant commands: `ims.v1.<region>.cmd.*.*`.
    pub fn tenant_commands(&self, region: &RegionId) -> String {
        format!("{}.cmd.*.*", self.region(region))
    }

    /// `ims.v1.<region>.op.<command>`
    pub fn operator_command(&self, region: &RegionId, command: &str) -> String {
        format!("{}.op.{command}", self.region(region))
    }

    pub fn operator_commands(&self, region: &RegionId) -> String {
        format!("{}.op.*", self.region(region))
    }

    /// `ims.v1.<region>.q.<tenant>.<query>`
    pub fn query(&self, region: &RegionId, tenant: &TenantId, query: &str) -> String {
        format!("{}.q.{tenant}.{query}", self.region(region))
    }

    pub fn queries(&self, region: &RegionId) -> String {
        format!("{}.q.*.*", self.region(region))
    }

    /// `ims.v1.<region>.events`: durable events, one bincode envelope a message.
    pub fn events(&self, region: &RegionId) -> String {
        format!("{}.events", self.region(region))
    }

    /// `ims.v1.<region>.log.read`: history in bounded batches.
    pub fn log_read(&self, region: &RegionId) -> String {
        format!("{}.log.read", self.region(region))
    }

    /// `ims.v1.<region>.log.groups`: with replication, the committed append groups, captured by
    /// the JetStream stream `IMS_LOG_<region>`. Only imsd's own users may publish or read it.
    pub fn log_groups(&self, region: &RegionId) -> String {
        format!("{}.log.groups", self.region(region))
    }

    /// `ims.v1.<region>.feed.<tenant>`: notifications to one tenant.
    pub fn feed(&self, region: &RegionId, tenant: &TenantId) -> String {
        format!("{}.feed.{tenant}", self.region(region))
    }

    /// `ims.v1.<region>.feed._all`: notifications to every tenant (tenant ids never start with
    /// `_`, so this is no tenant's feed).
    pub fn feed_all(&self, region: &RegionId) -> String {
        format!("{}.feed._all", self.region(region))
    }

    /// `ims.v1.<region>.audit.<name>`: the audit endpoints (`rows`, `who-could-use`).
    pub fn audit(&self, region: &RegionId, name: &str) -> String {
        format!("{}.audit.{name}", self.region(region))
    }

    /// `ims.v1.iam.<name>`: the identity context's subjects (`iam` is never a region id).
    pub fn iam(&self, name: &str) -> String {
        format!("{}.v1.iam.{name}", self.prefix)
    }

    /// The last two tokens of a `cmd` or `q` subject: the tenant token and the name. Whatever
    /// the tokens hold, they are returned raw for the caller to validate.
    pub fn tail_tokens(subject: &str) -> Option<(&str, &str)> {
        let mut tokens = subject.rsplitn(3, '.');
        let name = tokens.next()?;
        let tenant = tokens.next()?;
        Some((tenant, name))
    }
}

/// The header carrying an event's position on `events` messages.
pub const POSITION_HEADER: &str = "Ims-Position";
