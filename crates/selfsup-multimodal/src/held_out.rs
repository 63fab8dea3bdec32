//! Classes held out of training (`[[data.sources]] fashion-mnist
//! held_out_classes`): what "a caption names a class" means, the checks of
//! the key and of the held-out prompt templates, and the sets they shape.
//!
//! A caption names a class when one of the class's alternatives (its name
//! split at `/`: "t-shirt/top" is "t-shirt" or "top") appears in it as whole
//! words, case-insensitively, words being runs of letters and digits: "a
//! photo of a bag" names "bag", "handbag" does not, "t-shirt" names "shirt".
use crate::pairs::PairSet;
use selfsup_vision::data::idx::FASHION_MNIST_CLASSES;

/// The key, as errors name it.
pub const KEY: &str = "[[data.sources]] fashion-mnist held_out_classes";

/// Lower-cased words (runs of letters and digits) of `text`.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Whether `text` names `class` (see the module's doc).
pub fn names_class(text: &str, class: &str) -> bool {
    let hay = words(text);
    class.split('/').any(|alt| {
        let needle = words(alt);
        !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle.as_slice())
    })
}

/// The ten Fashion-MNIST classes, lower-cased (the captions' spelling).
pub fn fashion_classes() -> Vec<String> {
    FASHION_MNIST_CLASSES
        .iter()
        .map(|c| c.to_lowercase())
        .collect()
}

/// Indices (into [`fashion_classes`]) of `held`, checked: every name a
/// Fashion-MNIST class (case-insensitive), none twice, at least two held out
/// and two trained, and no trained class whose name names a held-out one
/// (its captions would name it: "t-shirt/top" names "shirt").
pub fn held_out_indices(held: &[String]) -> Result<Vec<usize>, String> {
    let classes = fashion_classes();
    let list = classes
        .iter()
        .map(|c| format!("\"{c}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let mut out: Vec<usize> = Vec::with_capacity(held.len().min(classes.len()));
    for name in held {
        let i = classes
            .iter()
            .position(|c| c.eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| {
                format!("{KEY}: \"{name}\" is not a Fashion-MNIST class; the classes are {list}")
            })?;
        if out.contains(&i) {
            return Err(format!("{KEY}: \"{name}\" is given twice"));
        }
        out.push(i);
    }
    if out.is_empty() {
        return Ok(out);
    }
    let trained = classes.len() - out.len();
    if out.len() < 2 || trained < 2 {
        return Err(format!(
            "{KEY}: {} of the {} classes held out; hold out at least 2 (zero-shot chooses \
             among them) and leave at least 2 to train on",
            out.len(),
            classes.len()
        ));
    }
    let trained_classes = classes
        .iter()
        .enumerate()
        .filter(|(t, _)| !out.contains(t))
        .map(|(_, c)| c);
    for tc in trained_classes {
        if let Some(&h) = out.iter().find(|&&h| names_class(tc, &classes[h])) {
            return Err(format!(
                "{KEY}: \"{}\" is held out but the trained class \"{tc}\" names it (its \
                 captions would); hold out both or neither",
                classes[h]
            ));
        }
    }
    Ok(out)
}

/// `template` as compared with others: lower-cased words, the `{}` or
/// `{label}` slot as one word.
fn template_words(template: &str) -> Vec<String> {
    words(&crate::captions::fill(template, "\u{1}slot\u{1}"))
}

/// Checks that no held-out prompt template is a training template (same
/// words in the same order, case and punctuation aside) and that each has a
/// slot for the class name.
pub fn check_templates(held_out: &[String], training: &[String]) -> Result<(), String> {
    for t in held_out {
        if !t.contains("{}") && !t.contains("{label}") {
            return Err(format!(
                "[eval] held_out_templates: \"{t}\" has no {{}} for the class name"
            ));
        }
        let w = template_words(t);
        if let Some(same) = training.iter().find(|c| template_words(c) == w) {
            return Err(format!(
                "[eval] held_out_templates: \"{t}\" is the training template \"{same}\" \
                 ([[data.sources]] fashion-mnist captions); zero-shot prompts must be ones \
                 training never used"
            ));
        }
    }
    Ok(())
}

/// The images of `set` whose label is one of `keep`, relabelled to their
/// position in `keep` (the classes become `keep`'s names, in that order).
pub fn keep_classes(set: &PairSet, keep: &[usize]) -> PairSet {
    let labels = set.images.labels.as_deref().unwrap_or_default();
    let idx: Vec<usize> = labels
        .iter()
        .enumerate()
        .filter(|(_, &l)| usize::try_from(l).is_ok_and(|l| keep.contains(&l)))
        .map(|(i, _)| i)
        .collect();
    let mut out = set.subset(&idx);
    let relabel = |l: i64| {
        keep.iter()
            .position(|&k| usize::try_from(l) == Ok(k))
            .map_or(-1, |p| p as i64)
    };
    out.images.labels = out
        .images
        .labels
        .map(|ls| ls.into_iter().map(relabel).collect());
    out.images.classes = keep
        .iter()
        .filter_map(|&k| set.images.classes.get(k).cloned())
        .collect();
    out
}

/// The pairs of `set` none of whose captions names a class of `held`, and
/// how many images were dropped.
pub fn drop_naming(set: &PairSet, held: &[String]) -> (PairSet, usize) {
    let keep: Vec<usize> = (0..set.len())
        .filter(|&i| {
            !set.captions[i]
                .iter()
                .any(|c| held.iter().any(|h| names_class(c, h)))
        })
        .collect();
    (set.subset(&keep), set.len() - keep.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caption_names_a_class_by_whole_words() {
        assert!(names_class("a photo of a bag", "bag"));
        assert!(names_class("A Photo of an ANKLE BOOT.", "ankle boot"));
        assert!(!names_class("handbag", "bag"));
        assert!(!names_class("womans boots", "ankle boot"));
        assert!(!names_class("an ankle and a boot", "ankle boot"));
        assert!(names_class("t-shirt", "shirt"));
        assert!(names_class("top with upwards arrow", "t-shirt/top"));
        assert!(names_class("a photo of a t-shirt", "t-shirt/top"));
        assert!(!names_class("tshirt", "shirt"));
    }

    #[test]
    fn held_out_classes_are_checked_naming_the_key_and_the_classes() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            held_out_indices(&s(&["Trouser", "sandal", "ankle boot"])).unwrap(),
            vec![1, 5, 9]
        );
        assert_eq!(held_out_indices(&[]).unwrap(), Vec::<usize>::new());
        let e = held_out_indices(&s(&["sandal", "boot"])).unwrap_err();
        assert!(
            e.contains("held_out_classes")
                && e.contains("\"boot\"")
                && e.contains("\"ankle boot\"")
                && e.contains("\"t-shirt/top\""),
            "{e}"
        );
        let all = fashion_classes();
        let e = held_out_indices(&all).unwrap_err();
        assert!(
            e.contains("held_out_classes") && e.contains("10 of the 10"),
            "{e}"
        );
        let e = held_out_indices(&all[1..]).unwrap_err();
        assert!(e.contains("9 of the 10") && e.contains("at least 2"), "{e}");
        assert_eq!(held_out_indices(&all[..8]).unwrap().len(), 8);
        // "t-shirt/top" trained would name the held-out "shirt".
        assert!(held_out_indices(&all[2..])
            .unwrap_err()
            .contains("names it"));
        let e = held_out_indices(&s(&["bag"])).unwrap_err();
        assert!(e.contains("1 of the 10"), "{e}");
        let e = held_out_indices(&s(&["bag", "Bag"])).unwrap_err();
        assert!(e.contains("twice"), "{e}");
        let e = held_out_indices(&s(&["shirt", "bag"])).unwrap_err();
        assert!(
            e.contains("\"t-shirt/top\"") && e.contains("\"shirt\""),
            "{e}"
        );
        assert!(held_out_indices(&s(&["shirt", "t-shirt/top"])).is_ok());
    }

    #[test]
    fn held_out_templates_must_differ_from_training_templates() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let training = s(&["a photo of a {}", "a {}"]);
        assert!(check_templates(&s(&["a picture of a {}."]), &training).is_ok());
        for same in ["A photo of a {label}.", "a {}!"] {
            let e = check_templates(&s(&[same]), &training).unwrap_err();
            assert!(
                e.contains("held_out_templates") && e.contains("training"),
                "{e}"
            );
        }
        let e = check_templates(&s(&["a picture"]), &training).unwrap_err();
        assert!(e.contains("no {}"), "{e}");
    }
}
