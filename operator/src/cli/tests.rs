use super::*;

#[test]
fn status_shows_the_healthy_condition_and_the_data_plane() {
    let mut status = OutboxPipelineStatus::default();
    status.put_condition(
        ConditionType::Healthy,
        "False",
        "Lagging",
        "the relay's iterator age is 420 s",
        Some(1),
        "2026-11-29T03:00:00Z",
    );
    status.data_plane = Some(DataPlaneStatus {
        checked_at: "2026-11-29T03:00:00Z".into(),
        mapping_state: Some("Enabled".into()),
        iterator_age_seconds: Some(420),
        relay_errors: Some(0),
        parked_batches: Some("≥1000".into()),
        ..DataPlaneStatus::default()
    });
    let mut out = Vec::new();
    print_status(&mut out, "default/p", &status).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("Healthy          False   Lagging"), "{text}");
    assert!(text.contains("iterator age (max, 5 min): 420 s"), "{text}");
    assert!(text.contains("parked batches: ≥1000"), "{text}");
    assert!(
        text.contains("relay errors / throttles (15 min): 0 / -"),
        "{text}"
    );
}
