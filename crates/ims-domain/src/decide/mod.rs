//! `decide`: the rules of DESIGN.md section 2, as one pure function from state and command to
//! events or a refusal. This module says who may send what and hands each command to the rules
//! of its area.

mod copy;
mod guards;
mod images;
mod lifecycle;
mod marketplace;
mod sharing;
mod tenants;
mod validation;

pub use validation::{check_family, parse_file_format};

use crate::{
    Command, DomainError, ErrorCode, Event, ImageId, OperatorCommand, RegionId, SharingPolicy,
    State, TenantCommand, TenantId,
};

/// Who sends a command: the tenant named by the subject, or the platform operator (which is also
/// the identity of the service's own sagas).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Actor {
    Operator,
    Tenant(TenantId),
    /// The region's scheduler, carrying out timed transitions (DESIGN.md section 13).
    Scheduler,
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Actor::Operator => f.write_str("operator"),
            Actor::Scheduler => f.write_str("scheduler"),
            Actor::Tenant(tenant) => write!(f, "tenant {tenant}"),
        }
    }
}

/// Everything `decide` needs from outside: who asks, where, when, and the id a new image gets.
#[derive(Clone, Debug)]
pub struct Context<'a> {
    pub actor: Actor,
    pub region: RegionId,
    pub now_ms: u64,
    /// The id of an image this command creates, if it creates one (a UUID v7 from the caller).
    pub new_image_id: ImageId,
    /// If set, the command's image must be at exactly this version (`conflict` otherwise).
    pub expected_version: Option<u64>,
    pub policy: &'a SharingPolicy,
}

/// Decides what `command` does to `state`: the events to append, or why it is refused. Pure:
/// the same inputs always give the same answer.
pub fn decide(
    state: &State,
    command: &Command,
    context: &Context,
) -> Result<Vec<Event>, DomainError> {
    match (command, &context.actor) {
        (Command::Tenant(command), Actor::Tenant(_)) => decide_tenant(state, command, context),
        // The tenant commands the operator sends too, for public images.
        (Command::Tenant(TenantCommand::DeleteImage { image_id }), Actor::Operator) => {
            lifecycle::delete_image(state, *image_id, context)
        }
        (Command::Tenant(TenantCommand::DeprecateImage(deprecate)), Actor::Operator) => {
            lifecycle::deprecate_image(state, deprecate, context)
        }
        (Command::Scheduled(scheduled), Actor::Scheduler) => {
            lifecycle::carry_out(state, scheduled, context)
        }
        (Command::Scheduled(_), _) | (_, Actor::Scheduler) => Err(DomainError::new(
            ErrorCode::Forbidden,
            format!(
                "{} by {}: only the region's scheduler carries out scheduled transitions, and \
                 it sends nothing else",
                command.name(),
                context.actor
            ),
        )),
        (Command::Operator(command), Actor::Operator) => decide_operator(state, command, context),
        (Command::Operator(_), Actor::Tenant(tenant)) => Err(DomainError::new(
            ErrorCode::Forbidden,
            format!(
                "{} is an operator command; tenant {tenant} cannot send it",
                command.name()
            ),
        )),
        (Command::Tenant(_), Actor::Operator) => Err(DomainError::new(
            ErrorCode::Forbidden,
            format!(
                "{} is a tenant command; send it on a tenant's subject",
                command.name()
            ),
        )),
    }
}

/// A tenant's command, by area.
fn decide_tenant(
    state: &State,
    command: &TenantCommand,
    context: &Context,
) -> Result<Vec<Event>, DomainError> {
    match command {
        TenantCommand::CreateImage(create) => images::create_image(state, create, context),
        TenantCommand::UpdateImage(update) => images::update_image(state, update, context),
        TenantCommand::DeleteImage { image_id } => {
            lifecycle::delete_image(state, *image_id, context)
        }
        TenantCommand::RestoreImage { image_id } => {
            lifecycle::restore_image(state, *image_id, context)
        }
        TenantCommand::ShareImage {
            image_id,
            tenants,
            organizations,
        } => sharing::share_image(state, *image_id, tenants, organizations, context),
        TenantCommand::UnshareImage {
            image_id,
            tenants,
            organizations,
        } => sharing::unshare_image(state, *image_id, tenants.as_deref(), organizations, context),
        TenantCommand::AcceptShare { image_id } => {
            sharing::answer_share(state, *image_id, true, context)
        }
        TenantCommand::RejectShare { image_id } => {
            sharing::answer_share(state, *image_id, false, context)
        }
        TenantCommand::CopyImage {
            image_id,
            target_region,
            name,
        } => copy::copy_image(state, *image_id, target_region, name.as_deref(), context),
        TenantCommand::ListOnMarketplace {
            image_id,
            publisher,
            price,
        } => marketplace::list_on_marketplace(state, *image_id, publisher, price, context),
        TenantCommand::DelistFromMarketplace { image_id } => {
            marketplace::delist_from_marketplace(state, *image_id, context)
        }
        TenantCommand::DeprecateImage(deprecate) => {
            lifecycle::deprecate_image(state, deprecate, context)
        }
    }
}

/// The operator's command, by area.
fn decide_operator(
    state: &State,
    command: &OperatorCommand,
    context: &Context,
) -> Result<Vec<Event>, DomainError> {
    match command {
        OperatorCommand::RegisterTenant {
            tenant,
            quota,
            organization,
        } => tenants::register_tenant(state, tenant, *quota, organization.as_ref(), context),
        OperatorCommand::SetQuota { tenant, quota } => {
            tenants::set_quota(state, tenant, *quota, context)
        }
        OperatorCommand::SetRetention { tenant, days } => {
            tenants::set_retention(state, tenant, *days, context)
        }
        OperatorCommand::PublishPublicImage(publish) => {
            images::publish_public_image(publish, context)
        }
        OperatorCommand::ReportBuild {
            image_id,
            outcome,
            checksum_sha256,
            file,
            reason,
        } => images::report_build(
            state,
            *image_id,
            *outcome,
            images::BuildFacts {
                checksum_sha256: checksum_sha256.as_deref(),
                file: file.as_ref(),
                reason: reason.as_deref(),
            },
            context,
        ),
        OperatorCommand::RecordUsage {
            image_id,
            tenant,
            hours,
        } => marketplace::record_usage(state, *image_id, tenant, *hours, context),
        OperatorCommand::ReceiveCopy(copy) => copy::receive_copy(state, copy, context),
        OperatorCommand::RecordLaunch { image_id, tenant } => {
            images::record_launch(state, *image_id, tenant, context)
        }
        OperatorCommand::RecordCopyOutcome {
            image_id,
            copy_image_id,
            outcome,
        } => copy::record_copy_outcome(state, *image_id, *copy_image_id, outcome, context),
    }
}
