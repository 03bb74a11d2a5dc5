//! A given-when-then helper for the rules: `given` commands that must succeed, `when` one more,
//! `then` expect its events or its error code.

#![allow(dead_code)]

use std::collections::BTreeMap;

use ims_domain::*;

pub const REGION: &str = "eu-west-0";

pub fn tenant(id: &str) -> TenantId {
    TenantId::parse(id).unwrap()
}

pub fn region() -> RegionId {
    RegionId::parse(REGION).unwrap()
}

pub fn image_id(n: u128) -> ImageId {
    ImageId::from_bytes(n.to_be_bytes())
}

pub fn os() -> Option<Os> {
    Some(Os {
        platform: "ubuntu".into(),
        version: "22.04".into(),
        arch: "x86_64".into(),
    })
}

pub fn system_image(name: &str) -> TenantCommand {
    TenantCommand::CreateImage(Box::new(CreateImage {
        name: name.into(),
        disk: DiskKind::System,
        source: CreateSource::Ecs {
            instance_id: "ecs-42".into(),
            data_disk_ids: vec![],
        },
        os: os(),
        min_disk_gb: 40,
        encryption: None,
        tags: BTreeMap::new(),
        description: String::new(),
        protected: false,
        family: None,
        exclude_from_latest: false,
    }))
}

pub fn with_create(command: TenantCommand, change: impl FnOnce(&mut CreateImage)) -> TenantCommand {
    let TenantCommand::CreateImage(mut create) = command else {
        panic!("not a create-image")
    };
    change(&mut create);
    TenantCommand::CreateImage(create)
}

pub fn succeeded(image: ImageId) -> OperatorCommand {
    OperatorCommand::ReportBuild {
        image_id: image,
        outcome: BuildOutcome::Succeeded {
            size_bytes: 1 << 30,
        },
        checksum_sha256: Some("a".repeat(64)),
        file: None,
        reason: None,
    }
}

pub fn register(id: &str) -> (Actor, Command) {
    (
        Actor::Operator,
        OperatorCommand::RegisterTenant {
            tenant: tenant(id),
            quota: None,
            organization: None,
        }
        .into(),
    )
}

pub fn by(id: &str, command: impl Into<Command>) -> (Actor, Command) {
    (Actor::Tenant(tenant(id)), command.into())
}

pub fn op(command: impl Into<Command>) -> (Actor, Command) {
    (Actor::Operator, command.into())
}

/// The operator publishes a public system image named `name`.
pub fn publish_public(name: &str) -> OperatorCommand {
    OperatorCommand::PublishPublicImage(Box::new(PublishPublicImage {
        name: name.into(),
        disk: DiskKind::System,
        os: os(),
        min_disk_gb: 10,
        size_bytes: 1,
        checksum_sha256: "b".repeat(64),
        tags: Default::default(),
        description: String::new(),
        family: None,
    }))
}

/// t1 deletes `image`: sent twice, it recycles the image and then purges it.
pub fn purge(image: ImageId) -> (Actor, Command) {
    by("t1", TenantCommand::DeleteImage { image_id: image })
}

/// `update-image` that protects `image` from deletion.
pub fn protect(image: ImageId) -> TenantCommand {
    TenantCommand::UpdateImage(Box::new(UpdateImage {
        image_id: image,
        name: None,
        description: None,
        tags: None,
        min_disk_gb: None,
        protected: Some(true),
        family: None,
        exclude_from_latest: None,
    }))
}

/// `deprecate-image` setting only a state (no replacement, nothing scheduled).
pub fn deprecate(image: ImageId, state: DeprecationState) -> TenantCommand {
    TenantCommand::DeprecateImage(Box::new(DeprecateImage {
        image_id: image,
        state,
        replacement: None,
        obsolete_at_ms: None,
        delete_at_ms: None,
    }))
}

/// A region's state built from commands, with a clock and an id counter standing in for the
/// world outside the domain.
#[derive(Debug)]
pub struct Scenario {
    pub state: State,
    pub policy: SharingPolicy,
    pub now_ms: u64,
    pub next_image: u128,
    pub expected_version: Option<u64>,
}

impl Scenario {
    pub fn new() -> Self {
        Self {
            state: State::default(),
            policy: SharingPolicy::default(),
            now_ms: 1_700_000_000_000,
            next_image: 1,
            expected_version: None,
        }
    }

    fn context(&self, actor: Actor) -> Context<'_> {
        Context {
            actor,
            region: region(),
            now_ms: self.now_ms,
            new_image_id: image_id(self.next_image),
            expected_version: self.expected_version,
            policy: &self.policy,
        }
    }

    /// Runs `command` through decide and evolve, as a writer would.
    pub fn run(&mut self, (actor, command): (Actor, Command)) -> Result<Vec<Event>, DomainError> {
        let result = decide(&self.state, &command, &self.context(actor));
        if let Ok(events) = &result {
            for event in events {
                evolve(&mut self.state, event);
            }
            if events.iter().any(|e| matches!(e, Event::ImageCreated(_))) {
                self.next_image += 1;
            }
        }
        self.now_ms += 1;
        result
    }

    /// Applies commands that must succeed.
    #[track_caller]
    pub fn given(mut self, commands: impl IntoIterator<Item = (Actor, Command)>) -> Self {
        for command in commands {
            let name = command.1.name();
            if let Err(error) = self.run(command) {
                panic!("given {name} failed: {error}");
            }
        }
        self
    }

    pub fn when(mut self, command: (Actor, Command)) -> Then {
        let before = self.state.clone();
        let result = self.run(command);
        Then {
            result,
            before,
            after: self.state,
        }
    }

    pub fn image(&self, id: ImageId) -> &Image {
        &self.state.images[&id]
    }
}

/// The outcome of `when`, with the state before and after it.
#[derive(Debug)]
pub struct Then {
    pub result: Result<Vec<Event>, DomainError>,
    pub before: State,
    pub after: State,
}

impl Then {
    /// The command was refused with `code`, the message names `mentions`, and nothing changed.
    #[track_caller]
    pub fn then_refused(self, code: ErrorCode, mentions: &str) -> DomainError {
        let error = match self.result {
            Ok(events) => panic!("expected {code}, got events {events:?}"),
            Err(error) => error,
        };
        assert_eq!(error.code, code, "wrong code; message: {}", error.message);
        assert!(
            error.message.contains(mentions),
            "message {:?} does not name {mentions:?}",
            error.message
        );
        assert_eq!(
            self.before, self.after,
            "a refused command changed the state"
        );
        error
    }

    /// The command succeeded; returns its events and the new state.
    #[track_caller]
    pub fn then_ok(self) -> (Vec<Event>, State) {
        match self.result {
            Ok(events) => (events, self.after),
            Err(error) => panic!("expected success, got {error}"),
        }
    }
}

/// t1 owns an active private system image (id 1); t2 and t3 are registered too.
pub fn owner_with_active_image() -> Scenario {
    Scenario::new().given([
        register("t1"),
        register("t2"),
        register("t3"),
        by("t1", system_image("web")),
        op(succeeded(image_id(1))),
    ])
}
