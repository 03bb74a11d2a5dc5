//! Tenants: registration and quotas, by the operator.

use crate::{DomainError, Event, State, TenantId};

use super::guards::*;
use super::Context;

/// `register-tenant`: once per tenant and region, with the default quota unless given.
pub(super) fn register_tenant(
    state: &State,
    tenant: &TenantId,
    quota: Option<u32>,
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
    Ok(vec![Event::TenantRegistered {
        tenant: tenant.clone(),
        quota,
    }])
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
