//! Training the reward model's top block with its head, on the tiny fixture models: the training
//! loss falls below the closed-form optimum of the frozen backbone, and the written head plus
//! blocks file loads back as a reward model that scores exactly like the one trained in memory.

use std::path::Path;

use artifact::SourceTexts;
use data::LabelledText;
use lm::{left_pad, CausalLm, DeviceChoice, DtypeChoice, LoadedModel};
use rad::{fit_reward, FeatureOptions, FitOptions, RewardHead, RewardModel, TopBlockOptions};
use tch::Tensor;

/// Made-up texts whose label is whether they contain "bad": learnable from the tokens.
fn source() -> SourceTexts {
    let words = [
        "the", "cat", "sat", "on", "a", "mat", "and", "then", "ran", "home", "quickly", "today",
    ];
    let item = |i: usize| {
        let toxic = i.is_multiple_of(2);
        let mut text: Vec<&str> = (0..3 + i % 5)
            .map(|j| words[(i * 7 + j * 3) % 12])
            .collect();
        if toxic {
            text.insert(i % text.len(), "bad");
        }
        LabelledText {
            text: text.join(" "),
            label: if toxic { 1.0 } else { 0.0 },
            source: "made-up".into(),
            id: i.to_string(),
            group: None,
        }
    };
    SourceTexts {
        name: "made-up".into(),
        train: (0..48).map(item).collect(),
        held_out: (48..64).map(item).collect(),
    }
}

fn options(top_blocks: Option<TopBlockOptions>) -> FitOptions {
    FitOptions {
        features: FeatureOptions {
            batch_size: 8,
            max_tokens: 32,
        },
        ridge: 1e-3,
        record: Default::default(),
        feature_cache: None,
        top_blocks,
    }
}

fn load(dir: &Path) -> LoadedModel {
    LoadedModel::load_layers(dir, DeviceChoice::Cpu, DtypeChoice::F32, None)
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// wᵀh + b at each text's last token, computed directly from a model and a head.
fn last_token_rewards(model: &dyn CausalLm, head: &RewardHead, rows: &[Vec<i64>]) -> Vec<f32> {
    let rows: Vec<&[i64]> = rows.iter().map(Vec::as_slice).collect();
    let (ids, mask) = left_pad(&rows, tch::Device::Cpu);
    let hidden = tch::no_grad(|| model.forward_hidden(&ids, &mask, &mut model.new_cache()));
    let rewards = hidden.select(1, -1).matmul(&Tensor::from_slice(&head.w)) + f64::from(head.b);
    Vec::<f32>::try_from(rewards).unwrap()
}

#[test]
fn trained_top_block_beats_the_frozen_optimum_and_reloads_exactly() {
    let sources = [source()];
    for name in ["tiny-llama", "tiny-gpt2"] {
        let dir = test_support::fixture(name);
        let frozen = fit_reward(&load(&dir), &sources, &options(None), |_| {}).unwrap();
        assert!(frozen.fit.trained_blocks.is_none());

        let top = TopBlockOptions {
            blocks: 1,
            epochs: 10,
            learning_rate: 3e-4,
            weight_decay: 0.0,
            batch_size: 8,
            seed: 0,
        };
        let loaded = load(&dir);
        let head = fit_reward(&loaded, &sources, &options(Some(top)), |_| {}).unwrap();
        let trained = head
            .fit
            .trained_blocks
            .as_ref()
            .expect("trained blocks recorded");
        assert_eq!(trained.first_block, loaded.model.info().num_layers - 1);
        assert_eq!(trained.epoch_losses.len(), 10);
        assert_eq!(
            trained.frozen_held_out, frozen.fit.held_out,
            "{name}: the starting point is the closed-form head"
        );
        let frozen_loss = frozen.fit.train_metrics.as_ref().unwrap().prefix_loss;
        let trained_loss = head.fit.train_metrics.as_ref().unwrap().prefix_loss;
        assert!(
            trained_loss < 0.9 * frozen_loss,
            "{name}: training loss {trained_loss} is not below the frozen optimum {frozen_loss}"
        );

        let out = test_support::scratch_dir(&format!("rad-train-{name}"));
        let path = out.join("head.json");
        assert!(head.save(&path).is_err(), "a trained head needs its blocks");
        head.save_with_blocks(&path, loaded.model.as_ref()).unwrap();
        assert!(RewardHead::blocks_path(&path).is_file());

        let reloaded = RewardModel::load(&path, &dir, DeviceChoice::Cpu, DtypeChoice::F32).unwrap();
        let texts: Vec<&str> = sources[0]
            .held_out
            .iter()
            .map(|t| t.text.as_str())
            .collect();
        let from_file = reloaded.score_texts(&texts).unwrap();
        let rows: Vec<Vec<i64>> = texts
            .iter()
            .map(|t| loaded.tokenizer.encode(t).unwrap())
            .collect();
        let in_memory = last_token_rewards(loaded.model.as_ref(), &head, &rows);
        for (a, b) in from_file.iter().zip(&in_memory) {
            assert!((a - b).abs() < 1e-4, "{name}: {a} from the files vs {b}");
        }
        // And they differ from the frozen backbone's rewards with the same head.
        let plain = last_token_rewards(load(&dir).model.as_ref(), &head, &rows);
        assert!(
            plain
                .iter()
                .zip(&in_memory)
                .any(|(a, b)| (a - b).abs() > 1e-3),
            "{name}: training the block changed nothing"
        );

        std::fs::remove_file(RewardHead::blocks_path(&path)).unwrap();
        let error = RewardModel::load(&path, &dir, DeviceChoice::Cpu, DtypeChoice::F32)
            .err()
            .map(|e| format!("{e:#}"))
            .expect("a missing blocks file is refused");
        assert!(error.contains("head.blocks.safetensors"), "{error}");
        std::fs::remove_dir_all(&out).unwrap();
    }
}
