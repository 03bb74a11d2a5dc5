//! Property test: Marketplace money never wraps. Whatever prices (valid or not) are listed and
//! whatever usage is recorded, every accepted charge is exactly price × hours, and every
//! tenant's total is exactly the sum of its accepted charges (computed here in u128), at most
//! u64::MAX; a charge that would not fit is refused.

mod support;

use ims_domain::limits::{PRICE_MINOR_PER_HOUR_MAX, USAGE_HOURS_MAX};
use ims_domain::*;
use proptest::prelude::*;
use support::*;

fn price() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(u64::MAX),
        Just(PRICE_MINOR_PER_HOUR_MAX),
        Just(PRICE_MINOR_PER_HOUR_MAX + 1),
        1u64..=PRICE_MINOR_PER_HOUR_MAX,
        any::<u64>(),
    ]
}

fn hours() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(USAGE_HOURS_MAX),
        Just(USAGE_HOURS_MAX + 1),
        Just(u32::MAX),
        1u32..=USAGE_HOURS_MAX,
    ]
}

proptest! {
    #[test]
    fn totals_are_exact_sums_and_never_wrap(
        listed in price(),
        usage in proptest::collection::vec((hours(), 0usize..2), 1..40),
        start in prop_oneof![Just(0u64), Just(u64::MAX - 20_000_000_000_000), any::<u64>()],
    ) {
        let mut scenario = owner_with_active_image();
        let listing = scenario.run(by("t1", TenantCommand::ListOnMarketplace {
            image_id: image_id(1),
            publisher: "Acme".into(),
            price: Price::PerHour { amount_minor: listed, currency: Currency(*b"USD") },
        }));
        prop_assert_eq!(listing.is_ok(), (1..=PRICE_MINOR_PER_HOUR_MAX).contains(&listed));
        if listing.is_err() {
            return Ok(());
        }
        // A tenant with a long history: its total starts anywhere.
        for t in ["t2", "t3"] {
            scenario.state.tenants.get_mut(&tenant(t)).unwrap().charges_minor.insert("USD".into(), start);
        }
        let mut expected = [u128::from(start); 2];
        for (hours, who) in usage {
            let t = ["t2", "t3"][who];
            let result = scenario.run(op(OperatorCommand::RecordUsage {
                image_id: image_id(1),
                tenant: tenant(t),
                hours,
            }));
            let charge = u128::from(listed) * u128::from(hours);
            let fits = hours <= USAGE_HOURS_MAX && expected[who] + charge <= u128::from(u64::MAX);
            prop_assert_eq!(result.is_ok(), fits, "{} hours at {} for {}", hours, listed, t);
            if let Ok(events) = result {
                let Event::UsageRecorded { charge_minor, .. } = &events[0] else {
                    panic!("{events:?}")
                };
                prop_assert_eq!(u128::from(*charge_minor), charge);
                expected[who] += charge;
            }
            for (index, t) in ["t2", "t3"].iter().enumerate() {
                let total = scenario.state.tenants[&tenant(t)].charges_minor["USD"];
                prop_assert_eq!(u128::from(total), expected[index]);
            }
        }
    }
}
