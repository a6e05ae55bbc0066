use super::*;

fn listed(key: &str, at: Option<&str>) -> Listed {
    Listed {
        key: key.to_owned(),
        parked_at: at.map(|t| t.parse().unwrap()),
    }
}

fn keys(l: &[Listed]) -> Vec<&str> {
    l.iter().map(|l| l.key.as_str()).collect()
}

#[test]
fn batches_go_oldest_first_within_the_time_range() {
    let all = vec![
        listed("c", Some("2026-11-29T05:00:02Z")),
        listed("a", Some("2026-11-29T05:00:00Z")),
        listed("b", Some("2026-11-29T05:00:01Z")),
        listed("odd", None),
    ];
    assert_eq!(
        keys(&select(all.clone(), &Options::default())),
        ["odd", "a", "b", "c"]
    );
    let opts = Options {
        since: Some("2026-11-29T05:00:01Z".parse().unwrap()),
        until: Some("2026-11-29T05:00:02Z".parse().unwrap()),
        ..Options::default()
    };
    // The range is [since, until); a batch of unknown time is left out of a ranged run.
    assert_eq!(keys(&select(all, &opts)), ["b"]);
}

#[test]
fn batches_parked_in_the_same_second_are_ordered_together() {
    let groups = same_second(vec![
        listed("a", Some("2026-11-29T05:00:00Z")),
        listed("b", Some("2026-11-29T05:00:00Z")),
        listed("c", Some("2026-11-29T05:00:01Z")),
        listed("x", None),
        listed("y", None),
    ]);
    let sizes: Vec<usize> = groups.iter().map(Vec::len).collect();
    assert_eq!(sizes, [2, 1, 1, 1]);
}

#[test]
fn left_counts_every_selected_batch_not_replayed() {
    let report = Report {
        total: 3,
        batches: vec![],
        ..Report::default()
    };
    assert_eq!(report.left(), 3);
}
