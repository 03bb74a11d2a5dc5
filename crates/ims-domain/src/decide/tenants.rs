//! Tenants: registration and quotas, by the operator.

use crate::{DomainError, Event, OrganizationId, State, TenantId};

use super::guards::*;
use super::Context;

/// `register-tenant`: once per tenant and region, with the default quota unless given, in an
/// organization if given (images shared with the organization reach it at once).
pub(super) fn register_tenant(
    state: &State,
    tenant: &TenantId,
    quota: Option<u32>,
    organization: Option<&OrganizationId>,
    context: &Context,
) -> Result<Vec<Event>, DomainError> {
    if state.tenants.contains_key(tenant) {
        return Err(DomainError::invalid_state(format!(
            "tenant {tenant} is already registered in region {}; use set-quota to change \
             its quota",
            context.region
        )));
    }
    let quota = quota.unwrap_or(context.policy.quota_default);
    check_quota(quota, context.policy)?;
    let mut events = vec![Event::TenantRegistered {
        tenant: tenant.clone(),
        quota,
    }];
    if let Some(organization) = organization {
        events.push(Event::TenantJoinedOrganization {
            tenant: tenant.clone(),
            organization: organization.clone(),
        });
    }
    Ok(events)
}

/// `set-quota`: the operator changes a registered tenant's quota.
pub(super) fn set_quota(
    state: &State,
    tenant: &TenantId,
    quota: u32,
    context: &Context,
) -> Result<Vec<Event>, DomainError> {
    registered(state, tenant, context)?;
    check_quota(quota, context.policy)?;
    Ok(vec![Event::QuotaSet {
        tenant: tenant.clone(),
        quota,
    }])
}

/// Days a retention may be: AWS's Recycle Bin keeps resources from one day to a year.
pub const RETENTION_DAYS: std::ops::RangeInclusive<u32> = 1..=365;

/// `set-retention`: the operator sets how long a registered tenant's deleted images stay in its
/// recycle bin. Images already there keep the purge time they were given.
pub(super) fn set_retention(
    state: &State,
    tenant: &TenantId,
    days: u32,
    context: &Context,
) -> Result<Vec<Event>, DomainError> {
    registered(state, tenant, context)?;
    if !RETENTION_DAYS.contains(&days) {
        return Err(DomainError::invalid_argument(format!(
            "retention of {days} days is out of range; expected 1 to 365 days"
        )));
    }
    Ok(vec![Event::RetentionSet {
        tenant: tenant.clone(),
        days,
    }])
}
