use super::*;

fn labels(per_class: &[usize]) -> Vec<i64> {
    per_class
        .iter()
        .enumerate()
        .flat_map(|(c, &n)| std::iter::repeat_n(c as i64, n))
        .collect()
}

#[test]
fn a_sample_split_is_stratified_disjoint_complete_and_seeded() {
    let l = labels(&[100, 50, 10, 1]);
    let s = by_sample(&l, 0.2, 7).unwrap();
    let mut all: Vec<usize> = s.train.iter().chain(&s.validation).copied().collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..l.len()).collect::<Vec<_>>(),
        "every sample on exactly one side"
    );
    let count = |idx: &[usize], c: i64| idx.iter().filter(|&&i| l[i] == c).count();
    assert_eq!(count(&s.validation, 0), 20);
    assert_eq!(count(&s.validation, 1), 10);
    assert_eq!(count(&s.validation, 2), 2);
    assert_eq!(count(&s.validation, 3), 0, "a lone sample stays in train");
    assert_eq!(s, by_sample(&l, 0.2, 7).unwrap(), "same seed, same split");
    assert_ne!(
        s,
        by_sample(&l, 0.2, 8).unwrap(),
        "another seed, another split"
    );
    assert!(s.validation.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn a_small_fraction_still_sets_one_of_each_label_aside() {
    let s = by_sample(&labels(&[3, 3]), 0.01, 0).unwrap();
    assert_eq!(s.validation.len(), 2);
}

#[test]
fn a_group_split_keeps_groups_whole() {
    let groups: Vec<&str> = ["ann", "bob", "cy", "dee", "ed"]
        .iter()
        .flat_map(|g| std::iter::repeat_n(*g, 4))
        .collect();
    let s = by_group(&groups, 0.4, 3, "speaker").unwrap();
    assert_eq!(s.validation.len(), 8, "two of five speakers");
    for v in &s.validation {
        assert!(
            s.train.iter().all(|t| groups[*t] != groups[*v]),
            "speaker {} is on both sides",
            groups[*v]
        );
    }
    assert_eq!(s, by_group(&groups, 0.4, 3, "speaker").unwrap());
}

#[test]
fn bad_fractions_and_too_little_data_are_refused_by_name() {
    for f in [0.0, 1.0, -0.5, f64::NAN] {
        let e = by_sample(&labels(&[5]), f, 0).unwrap_err().to_string();
        assert!(e.contains("validation fraction"), "{e}");
    }
    let e = by_sample(&labels(&[1, 1, 1]), 0.5, 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("none of a label with two"), "{e}");
    let e = by_group(&["one"; 4], 0.5, 0, "speaker")
        .unwrap_err()
        .to_string();
    assert!(e.contains("two speakers"), "{e}");
}
