#![allow(clippy::unwrap_used)]
use super::*;

fn room(name: &str) -> lk::Room {
    lk::Room {
        sid: format!("RM_{name}"),
        name: name.into(),
        ..Default::default()
    }
}

fn register(a: &mut Agents, now: Instant, id: &str, name: &str, kind: lk::JobType) {
    let req = lk::RegisterWorkerRequest {
        r#type: kind as i32,
        agent_name: name.into(),
        ..Default::default()
    };
    a.register(now, id, &req).unwrap();
}

/// Availability requests sent so far: (worker, job id).
fn offers(a: &mut Agents) -> Vec<(String, String)> {
    let mut v = vec![];
    while let Some(act) = a.poll_action() {
        if let Action::Send(w, msg) = act {
            if let ToWorker::Availability(r) = *msg {
                v.push((w, r.job.unwrap().id));
            }
        }
    }
    v
}

fn answer(a: &mut Agents, now: Instant, worker: &str, job: &str, available: bool) {
    let msg = FromWorker::Availability(lk::AvailabilityResponse {
        job_id: job.into(),
        available,
        ..Default::default()
    });
    a.worker_message(now, worker, msg);
}

fn status(a: &mut Agents, now: Instant, worker: &str, load: f32, available: bool) {
    let s = if available {
        lk::WorkerStatus::WsAvailable
    } else {
        lk::WorkerStatus::WsFull
    };
    let msg = FromWorker::UpdateWorker(lk::UpdateWorkerStatus {
        status: Some(s as i32),
        load,
        ..Default::default()
    });
    a.worker_message(now, worker, msg);
}

#[test]
fn an_unnamed_worker_gets_every_new_room_and_a_named_one_only_when_asked() {
    let now = Instant::now();
    let mut a = Agents::default();
    register(&mut a, now, "AW_auto", "", lk::JobType::JtRoom);
    register(&mut a, now, "AW_notes", "notes", lk::JobType::JtRoom);
    a.room_started(now, room("lobby"), None);
    let o = offers(&mut a);
    assert_eq!(o.len(), 1);
    assert_eq!(o[0].0, "AW_auto");
    // A room created with roomConfig.agents gets those, not the automatic one.
    let notes = lk::RoomAgentDispatch {
        agent_name: "notes".into(),
        metadata: "m".into(),
        ..Default::default()
    };
    a.room_started(now, room("planning"), Some(vec![notes]));
    let o = offers(&mut a);
    assert_eq!(o.len(), 1);
    assert_eq!(o[0].0, "AW_notes");
    // An API dispatch comes on top of the automatic one.
    a.create_dispatch(now, "lobby", "notes", "api").unwrap();
    assert_eq!(offers(&mut a)[0].0, "AW_notes");
    assert_eq!(
        a.list_dispatches("lobby", "").len(),
        1,
        "automatic is not listed"
    );
}

#[test]
fn jobs_wait_for_a_worker_go_to_the_least_loaded_and_move_on_when_refused_or_unanswered() {
    let now = Instant::now();
    let mut a = Agents::default();
    a.room_started(now, room("r"), None);
    assert!(offers(&mut a).is_empty());
    assert_eq!(a.counts().pending, 1, "kept until a worker registers");
    register(&mut a, now, "AW_busy", "", lk::JobType::JtRoom);
    let job = offers(&mut a)[0].1.clone();
    answer(&mut a, now, "AW_busy", &job, false);
    assert!(offers(&mut a).is_empty(), "nobody else yet");
    register(&mut a, now, "AW_b", "", lk::JobType::JtRoom);
    register(&mut a, now, "AW_c", "", lk::JobType::JtRoom);
    // A new worker is asked at once.
    let o = offers(&mut a);
    assert_eq!(o.len(), 1, "{o:?}");
    assert_eq!(o[0].0, "AW_b");
    answer(&mut a, now, "AW_b", &job, false);
    status(&mut a, now, "AW_b", 0.6, true);
    status(&mut a, now, "AW_c", 0.1, true);
    let o = offers(&mut a);
    assert_eq!(o, vec![("AW_c".to_string(), job.clone())]);
    // No answer in time: back to waiting, all three tried; after the retry delay the least
    // loaded of them is asked again.
    a.tick(now + AVAILABILITY_TIMEOUT);
    assert!(offers(&mut a).is_empty());
    status(&mut a, now, "AW_c", 0.9, true);
    a.tick(now + AVAILABILITY_TIMEOUT + RETRY_REFUSED);
    let o = offers(&mut a);
    assert_eq!(o[0].0, "AW_busy", "{o:?}");
    answer(&mut a, now, "AW_busy", &job, true);
    let assigned = std::iter::from_fn(|| a.poll_action())
        .any(|x| matches!(x, Action::Assign { worker, .. } if worker == "AW_busy"));
    assert!(assigned);
    assert_eq!(a.counts().assigned, 1);
}

#[test]
fn a_full_worker_is_skipped_and_gets_the_job_when_it_frees_up() {
    let now = Instant::now();
    let mut a = Agents::default();
    register(&mut a, now, "AW_a", "", lk::JobType::JtRoom);
    status(&mut a, now, "AW_a", 1.0, false);
    a.room_started(now, room("r"), None);
    assert!(offers(&mut a).is_empty());
    status(&mut a, now, "AW_a", 0.2, true);
    assert_eq!(offers(&mut a).len(), 1);
}

#[test]
fn a_dropped_workers_job_is_resumed_by_its_reconnection_or_offered_again_after_the_grace() {
    let now = Instant::now();
    let mut a = Agents::default();
    register(&mut a, now, "AW_1", "", lk::JobType::JtRoom);
    a.room_started(now, room("r"), None);
    let job = offers(&mut a)[0].1.clone();
    answer(&mut a, now, "AW_1", &job, true);
    while a.poll_action().is_some() {}
    a.worker_gone(now, "AW_1");
    assert_eq!(a.counts().orphaned, 1);
    // The same worker process, reconnected: it reports the job and keeps it.
    register(&mut a, now, "AW_2", "", lk::JobType::JtRoom);
    a.worker_message(
        now,
        "AW_2",
        FromWorker::MigrateJob(lk::MigrateJobRequest {
            job_ids: vec![job.clone()],
        }),
    );
    assert_eq!(a.counts().assigned, 1);
    a.tick(now + MIGRATE_GRACE);
    assert!(offers(&mut a).is_empty(), "resumed, not offered again");
    // A worker that dies for good: after the grace its job is offered to another.
    a.worker_gone(now, "AW_2");
    register(&mut a, now, "AW_3", "", lk::JobType::JtRoom);
    assert!(offers(&mut a).is_empty(), "waits for the grace first");
    a.tick(now + MIGRATE_GRACE);
    assert_eq!(offers(&mut a), vec![("AW_3".to_string(), job)]);
}

#[test]
fn closing_a_room_or_deleting_a_dispatch_terminates_running_jobs() {
    let now = Instant::now();
    let mut a = Agents::default();
    register(&mut a, now, "AW_n", "notes", lk::JobType::JtRoom);
    a.room_started(now, room("r"), Some(vec![]));
    let d = a.create_dispatch(now, "r", "notes", "x").unwrap();
    let job = offers(&mut a)[0].1.clone();
    answer(&mut a, now, "AW_n", &job, true);
    while a.poll_action().is_some() {}
    assert!(a.delete_dispatch("r", &d.id).is_some());
    assert_eq!(
        a.poll_action(),
        Some(Action::Send(
            "AW_n".into(),
            Box::new(ToWorker::Termination(lk::JobTermination { job_id: job }))
        ))
    );
    assert!(a.delete_dispatch("r", &d.id).is_none(), "gone");
    // A room closing ends its jobs the same way.
    a.create_dispatch(now, "r", "notes", "y").unwrap();
    let job = offers(&mut a)[0].1.clone();
    answer(&mut a, now, "AW_n", &job, true);
    while a.poll_action().is_some() {}
    a.room_finished("r");
    assert!(matches!(
        a.poll_action(),
        Some(Action::Send(_, m)) if matches!(*m, ToWorker::Termination(_))
    ));
    assert_eq!(
        a.counts(),
        Counts {
            workers: 1,
            ..Default::default()
        }
    );
}

#[test]
fn publisher_and_participant_workers_get_a_job_per_person_never_per_agent() {
    let now = Instant::now();
    let mut a = Agents::default();
    register(&mut a, now, "AW_p", "", lk::JobType::JtPublisher);
    a.room_started(now, room("r"), None);
    assert!(
        offers(&mut a).is_empty(),
        "no room job for publisher workers"
    );
    let alice = lk::ParticipantInfo {
        sid: "PA_a".into(),
        identity: "alice".into(),
        ..Default::default()
    };
    a.track_published(now, "r", &alice);
    a.track_published(now, "r", &alice);
    assert_eq!(offers(&mut a).len(), 1, "one job per publisher");
    let agent = lk::ParticipantInfo {
        sid: "PA_b".into(),
        kind: lk::participant_info::Kind::Agent as i32,
        ..Default::default()
    };
    a.track_published(now, "r", &agent);
    assert!(offers(&mut a).is_empty(), "agents get no agents");
}

#[test]
fn bad_input_is_refused_with_a_reason_and_bounded() {
    let now = Instant::now();
    let mut a = Agents::default();
    let long = "x".repeat(limits::MAX_AGENT_NAME + 1);
    let req = lk::RegisterWorkerRequest {
        agent_name: long.clone(),
        ..Default::default()
    };
    assert!(a
        .register(now, "AW_x", &req)
        .unwrap_err()
        .contains("agent name"));
    let req = lk::RegisterWorkerRequest {
        r#type: 99,
        ..Default::default()
    };
    assert!(a
        .register(now, "AW_x", &req)
        .unwrap_err()
        .contains("job type"));
    let big = "m".repeat(limits::MAX_JOB_METADATA + 1);
    assert!(a
        .create_dispatch(now, "r", "n", &big)
        .unwrap_err()
        .contains("metadata"));
    for _ in 0..limits::MAX_AGENT_DISPATCHES + 1 {
        a.create_dispatch(now, "r", "n", "").unwrap();
    }
    assert!(a
        .create_dispatch(now, "r", "n", "")
        .unwrap_err()
        .contains("maximum"));
    // A second register on a registered connection closes it.
    register(&mut a, now, "AW_y", "", lk::JobType::JtRoom);
    a.worker_message(now, "AW_y", FromWorker::Register(Default::default()));
    assert!(matches!(a.poll_action(), Some(Action::Close(w, _)) if w == "AW_y"));
    // Answers for jobs never offered are ignored.
    answer(&mut a, now, "AW_y", "AJ_nope", true);
    assert!(a.poll_action().is_none());
}
