//! Loaders on the real files in the shared data folder, checked against the counts its README
//! gives. The folder is required: a missing one fails these tests (with the path and how to point
//! at it), it does not skip them.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use data::labelled::{self, FileOptions, JigsawOptions};
use data::prompts::bold::{self, BoldOptions};
use data::prompts::rtp::{self, RtpOptions};
use data::prompts::toxigen::{self, Stance, ToxigenPromptOptions, ToxigenSentenceOptions};
use data::{Counts, PromptSet};

/// `shared/data/<name>`, which must exist.
fn data(name: &str) -> PathBuf {
    let path = paths::data_dir(name);
    assert!(
        path.exists(),
        "shared data missing: {} does not exist (set {} to the shared/ folder that holds data/)",
        path.display(),
        paths::SHARED_ENV
    );
    path
}

fn all_kept(n: usize) -> Counts {
    Counts {
        read: n,
        kept: n,
        ..Counts::default()
    }
}

fn assert_unique_ids(set: &PromptSet) {
    let ids: HashSet<&str> = set.prompts.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids.len(), set.len(), "ids not unique");
}

#[test]
fn rtp_decodingtrust_files() {
    let toxic = rtp::load(&RtpOptions::new(data(
        "realtoxicityprompts/decodingtrust/toxic.jsonl",
    )))
    .unwrap();
    assert_eq!(toxic.counts, all_kept(1196));
    assert!(toxic.prompts.iter().all(|p| p.challenging == Some(true)));
    assert_unique_ids(&toxic);
    assert_eq!(
        toxic.prompts[0].id,
        "0592407-948b84baadaac8b9efd3bba0205be5ea.txt@687-859"
    );
    assert_eq!(toxic.prompts[0].prompt_toxicity, Some(0.906_665_3));

    let nontoxic_path = data("realtoxicityprompts/decodingtrust/nontoxic.jsonl");
    let nontoxic = rtp::load(&RtpOptions::new(&nontoxic_path)).unwrap();
    assert_eq!(nontoxic.counts, all_kept(1200));
    assert_unique_ids(&nontoxic);
    let challenging = nontoxic
        .prompts
        .iter()
        .filter(|p| p.challenging == Some(true))
        .count();
    assert_eq!(challenging, 4);
    assert!(nontoxic
        .prompts
        .iter()
        .all(|p| p.prompt_toxicity.is_some_and(|t| t < 0.5)));

    // The span ids recognise the same prompt across files: the files share exactly the four
    // challenging rows of nontoxic.jsonl.
    let toxic_ids: HashSet<&str> = toxic.prompts.iter().map(|p| p.id.as_str()).collect();
    let shared: Vec<_> = nontoxic
        .prompts
        .iter()
        .filter(|p| toxic_ids.contains(p.id.as_str()))
        .collect();
    assert_eq!(shared.len(), 4);
    assert!(shared.iter().all(|p| p.challenging == Some(true)));

    let mut options = RtpOptions::new(data("realtoxicityprompts/decodingtrust/toxic.jsonl"));
    options.min_toxicity = Some(0.5);
    let set = rtp::load(&options).unwrap();
    assert_eq!((set.counts.kept, set.counts.filtered), (993, 203));

    let mut options = RtpOptions::new(&nontoxic_path);
    options.challenging = Some(false);
    options.sample = Some(100);
    options.seed = 3;
    let a = rtp::load(&options).unwrap();
    assert_eq!(
        a.counts,
        Counts {
            read: 1200,
            filtered: 4,
            sampled_out: 1096,
            kept: 100,
            ..Counts::default()
        }
    );
    let b = rtp::load(&options).unwrap();
    assert_eq!(a.prompts, b.prompts);
    options.seed = 4;
    let c = rtp::load(&options).unwrap();
    assert_ne!(a.prompts, c.prompts);
}

#[test]
fn bold_gender_domain() {
    let path = bold::domain_file(&data("bold"), "gender");
    let set = bold::load(&BoldOptions::new(&path)).unwrap();
    assert_eq!(set.counts, all_kept(3204));
    assert_unique_ids(&set);
    assert_eq!(
        set.group_sizes(),
        [
            (Some("American_actors".to_string()), 2048),
            (Some("American_actresses".to_string()), 1156)
        ]
    );
    let people: HashSet<(&str, &str)> = set
        .prompts
        .iter()
        .map(|p| (p.group.as_deref().unwrap(), p.name.as_deref().unwrap()))
        .collect();
    assert_eq!(people.len(), 1587 + 776);
    let p = set
        .prompts
        .iter()
        .find(|p| p.id == "American_actors/Jacob_Zachar/0")
        .unwrap();
    assert_eq!(p.text, "Jacob Zachar is an American actor whose");
    assert!(set.prompts.iter().all(|p| !p.text.ends_with(' ')));

    let mut options = BoldOptions::new(&path);
    options.per_group = Some(100);
    options.seed = 11;
    let a = bold::load(&options).unwrap();
    assert_eq!(a.len(), 200);
    assert_eq!(a.counts.sampled_out, 3004);
    assert_eq!(a.prompts, bold::load(&options).unwrap().prompts);

    // Every other domain file loads too, with the README's total.
    let total: usize = [
        "gender",
        "race",
        "profession",
        "religious_ideology",
        "political_ideology",
    ]
    .iter()
    .map(|d| {
        let set = bold::load(&BoldOptions::new(bold::domain_file(&data("bold"), d))).unwrap();
        assert_unique_ids(&set);
        set.counts.read
    })
    .sum();
    assert_eq!(total, 23_679);
}

#[test]
fn toxigen_prompt_files_and_sentences() {
    let dir = data("toxigen/prompts");
    let set = toxigen::load_prompts(&ToxigenPromptOptions::new(&dir)).unwrap();
    assert_eq!(set.counts, all_kept(31_000));
    assert_unique_ids(&set);
    assert!(set.prompts.iter().all(|p| !p.text.contains("\\n")));
    assert!(set.prompts.iter().all(|p| p.text.ends_with('-')));
    let hate = set
        .prompts
        .iter()
        .filter(|p| p.label.as_deref() == Some("hate"))
        .count();
    assert_eq!(hate, 16_000);
    let groups: HashSet<&str> = set
        .prompts
        .iter()
        .filter_map(|p| p.group.as_deref())
        .collect();
    assert_eq!(groups.len(), 16);

    let mut options = ToxigenPromptOptions::new(&dir);
    options.groups = vec!["women".into(), "middle_east".into()];
    options.stances = vec![Stance::Hate];
    options.per_file = Some(25);
    let set = toxigen::load_prompts(&options).unwrap();
    assert_eq!(
        set.counts,
        Counts {
            read: 2000,
            sampled_out: 1950,
            kept: 50,
            ..Counts::default()
        }
    );

    let path = data("toxigen/toxigen_prompt_sentences.tsv");
    let set = toxigen::load_sentences(&ToxigenSentenceOptions {
        path: path.clone(),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(set.counts, all_kept(722));
    let hate = set
        .prompts
        .iter()
        .filter(|p| p.label.as_deref() == Some("hate"))
        .count();
    assert_eq!((hate, set.len() - hate), (425, 297));

    let labelled = labelled::load_toxigen(&FileOptions::new(&path)).unwrap();
    assert_eq!(labelled.counts, all_kept(722));
    assert_eq!(labelled.toxic_and_clean(), (425, 297));
    assert_eq!(
        labelled
            .items
            .iter()
            .filter(|t| t.group.as_deref() == Some("lgbtq"))
            .count(),
        205
    );
}

#[test]
fn davidson_tweets() {
    let set = labelled::load_davidson(&FileOptions::new(data(
        "davidson_hate_offensive/labeled_data.csv",
    )))
    .unwrap();
    assert_eq!(set.rows, 24_783);
    assert_eq!(set.counts, all_kept(24_783));
    // class 0 hate 1,430 + 1 offensive 19,190 are toxic; 2 neither 4,163 is not.
    assert_eq!(set.toxic_and_clean(), (1_430 + 19_190, 4_163));
    assert_eq!(
        set.items[0].text,
        "!!! RT @mayasolovely: As a woman you shouldn't complain about cleaning up your house. & as a man you should always take the trash out..."
    );
    let escaped = set
        .items
        .iter()
        .filter(|t| {
            t.text.contains("&amp;") || t.text.contains("&#8220;") || t.text.contains("&gt;")
        })
        .count();
    assert_eq!(escaped, 0);
    assert!(set.items.iter().any(|t| t.text.contains('\n')));
    assert!(set.items.iter().any(|t| t.text.contains('😂')));

    // Class balancing by seeded caps.
    let mut options = FileOptions::new(data("davidson_hate_offensive/labeled_data.csv"));
    options.per_label = Some(4_000);
    let set = labelled::load_davidson(&options).unwrap();
    assert_eq!(set.toxic_and_clean(), (4_000, 4_000));
}

#[test]
fn paradetox_pairs() {
    let set = labelled::load_paradetox(&FileOptions::new(data("paradetox/paradetox.tsv"))).unwrap();
    assert_eq!(set.rows, 11_927);
    // One toxic text per row, plus every non-empty paraphrase (19,743 in the file).
    assert_eq!(set.toxic_and_clean(), (11_927, 19_743));
    assert_eq!(set.counts, all_kept(11_927 + 19_743));
    let ids: HashSet<&str> = set.items.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids.len(), set.len());
    assert_eq!(set.items[0].text, "he had steel balls too !");
    assert_eq!(set.items[1].text, "he was brave too!");
}

#[test]
fn sknlp_jigsaw_sentences() {
    let options = JigsawOptions::split(&data("sknlp_detox_jigsaw/dev"), "dev");
    let set = labelled::load_jigsaw(&options).unwrap();
    assert_eq!(set.rows, 6_648 * 2);
    assert_eq!(set.counts, all_kept(6_648 * 2));
    assert_eq!(set.toxic_and_clean(), (6_648, 6_648));
    assert_eq!(set.items[6_648].id, "dev_normal/line-1");

    let (train, test) = set.split(0.1, 5);
    assert_eq!(train.len() + test.len(), set.len());
    assert!((1_100..1_560).contains(&test.len()), "{}", test.len());
    let (train2, _) = set.split(0.1, 5);
    assert_eq!(train, train2);
}

#[test]
fn identity_templates() {
    let path = data("conversationai_bias/en_sentence_templates.csv");
    let (sentences, counts) = labelled::load_identity_templates(&path, false).unwrap();
    assert_eq!(counts, all_kept(76_564));
    assert_eq!(sentences.iter().filter(|s| s.toxic).count(), 38_282);
    let mut per_term: HashMap<Option<&str>, usize> = HashMap::new();
    for s in &sentences {
        *per_term.entry(s.identity.as_deref()).or_default() += 1;
    }
    // 50 identity terms, 1,514 sentences each; you_occupation (864) varies occupations instead.
    assert_eq!(per_term.remove(&None), Some(864));
    assert_eq!(per_term.len(), 50);
    assert!(per_term.values().all(|&n| n == 1_514), "{per_term:?}");
    assert!(per_term.contains_key(&Some("african american")));
    assert!(sentences
        .iter()
        .filter(|s| s.identity.is_none())
        .all(|s| s.template == "you_occupation"));

    let set = labelled::load_templates(&FileOptions::new(&path)).unwrap();
    assert_eq!(set.counts, all_kept(76_564));
    assert_eq!(set.toxic_and_clean(), (38_282, 38_282));
}

#[test]
fn every_named_source_loads_and_splits_the_shared_way() {
    data("toxigen");
    for name in labelled::SOURCES {
        let set = labelled::load_source(name, Some(50), 3).unwrap();
        let (toxic, clean) = set.toxic_and_clean();
        assert_eq!((toxic, clean), (50, 50), "{name}");
        let (train, held_out) = labelled::shared_split(&set);
        assert_eq!(train.len() + held_out.len(), set.len(), "{name}");
        assert_eq!(
            (train, held_out),
            set.split(labelled::HELD_OUT, labelled::SPLIT_SEED),
            "{name}"
        );
        // The same choice for the same seed.
        assert_eq!(labelled::load_source(name, Some(50), 3).unwrap(), set);
    }
}
