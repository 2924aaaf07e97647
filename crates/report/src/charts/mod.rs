//! The report's charts, each written as PNG and SVG into `<dir>/report/charts/`:
//!
//! - `frontier-<prompt set>-<scorer>`: toxicity against conditional perplexity, one line per
//!   method through its strengths, the `none` baseline as a star; EMT, toxic-rate and
//!   toxic-sample panels. A filled marker: the paired interval of the panel's toxicity
//!   difference from the cell's baseline excludes 0; hollow: it does not, or there is no
//!   baseline. Labels carry the confound audit's tags in brackets (`[len,eos]`).
//! - `groups-<prompt set>-<scorer>`: toxic rate per group (BOLD groups, AttaQ categories) for
//!   every method setting, with the largest gap bracketed and labelled with its interval.
//! - `cost`: generation throughput and peak memory per method setting, from `record.json`.
//! - `agreement-<scorer a>-<scorer b>`: each cell's toxic-sample share under two scorers.
//!
//! Text is drawn with DejaVu Sans, embedded in the binary (plotters' `ab_glyph` feature), so PNGs
//! look the same on every machine and no system font library is needed; SVGs name `sans-serif`
//! and let the viewer choose.

mod agreement;
mod bars;
mod frontier;

use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Once;

use anyhow::{anyhow, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::agreement::ScorerAgreement;
use crate::fairness::Fairness;
use crate::load::{CellOutputs, Experiment};

/// The font every chart uses, under the family name plotters asks for.
const FONT_FAMILY: &str = "sans-serif";
static DEJAVU_SANS: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

fn register_fonts() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // Bold and other styles fall back to the regular face: one 740 KB font is enough.
        if plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, DEJAVU_SANS).is_err() {
            panic!("the embedded DejaVu Sans is not a valid font");
        }
    });
}

/// Tableau 10 (distinct hues that stay apart for the colour-blind and in greyscale print), then
/// darker shades of the same hues, so a comparison of up to 20 methods repeats no colour.
const PALETTE: [RGBColor; 20] = [
    RGBColor(0x4E, 0x79, 0xA7),
    RGBColor(0xF2, 0x8E, 0x2B),
    RGBColor(0xE1, 0x57, 0x59),
    RGBColor(0x76, 0xB7, 0xB2),
    RGBColor(0x59, 0xA1, 0x4F),
    RGBColor(0xED, 0xC9, 0x48),
    RGBColor(0xB0, 0x7A, 0xA1),
    RGBColor(0xFF, 0x9D, 0xA7),
    RGBColor(0x9C, 0x75, 0x5F),
    RGBColor(0xBA, 0xB0, 0xAC),
    RGBColor(0x2A, 0x45, 0x66),
    RGBColor(0xA3, 0x5A, 0x10),
    RGBColor(0x9A, 0x2A, 0x2C),
    RGBColor(0x3B, 0x7A, 0x75),
    RGBColor(0x2F, 0x5E, 0x28),
    RGBColor(0x9E, 0x82, 0x1C),
    RGBColor(0x6E, 0x45, 0x63),
    RGBColor(0xC2, 0x55, 0x62),
    RGBColor(0x5C, 0x43, 0x34),
    RGBColor(0x6E, 0x66, 0x63),
];

fn palette(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

const TEXT_GREY: RGBColor = RGBColor(0x44, 0x44, 0x44);

fn font(size: f64) -> TextStyle<'static> {
    (FONT_FAMILY, size).into_font().color(&BLACK)
}

fn anchored(size: f64, h: HPos, v: VPos) -> TextStyle<'static> {
    font(size).pos(Pos::new(h, v))
}

/// Height of a figure's header: the title and `subtitle_lines` grey lines under it.
fn header_height(subtitle_lines: usize) -> u32 {
    58 + 24 * subtitle_lines as u32
}

/// Fills the figure white, draws the title and the grey subtitle lines centred at its top, and
/// returns the area below them.
fn draw_header<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    subtitle: &[String],
) -> Result<DrawingArea<DB, Shift>>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let (width, _) = root.dim_in_pixel();
    let (header, body) = root.split_vertically(header_height(subtitle.len()));
    header.draw(&Text::new(
        title,
        (width as i32 / 2, 14),
        anchored(26.0, HPos::Center, VPos::Top),
    ))?;
    for (i, line) in subtitle.iter().enumerate() {
        header.draw(&Text::new(
            line.as_str(),
            (width as i32 / 2, 50 + 24 * i as i32),
            anchored(16.0, HPos::Center, VPos::Top).color(&TEXT_GREY),
        ))?;
    }
    Ok(body)
}

/// A chart that can draw itself on any plotters backend.
trait Figure {
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static;
}

/// Draws a figure twice, as SVG and as PNG, into `<dir>/<stem>.svg|png`.
fn save(figure: &impl Figure, dir: &Path, stem: &str) -> Result<Vec<PathBuf>> {
    register_fonts();
    let (width, height) = figure.size();

    let svg_path = dir.join(format!("{stem}.svg"));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        figure
            .draw(&root)
            .with_context(|| format!("{}: cannot draw", svg_path.display()))?;
        root.present()
            .with_context(|| format!("{}: cannot draw", svg_path.display()))?;
    }
    std::fs::write(&svg_path, svg)
        .with_context(|| format!("{}: cannot write", svg_path.display()))?;

    let png_path = dir.join(format!("{stem}.png"));
    let mut rgb = vec![0u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        figure
            .draw(&root)
            .with_context(|| format!("{}: cannot draw", png_path.display()))?;
        root.present()
            .with_context(|| format!("{}: cannot draw", png_path.display()))?;
    }
    write_png(&png_path, width, height, &rgb)?;
    Ok(vec![png_path, svg_path])
}

fn write_png(path: &Path, width: u32, height: u32, rgb: &[u8]) -> Result<()> {
    let file = std::fs::File::create(path)
        .with_context(|| format!("{}: cannot create", path.display()))?;
    let mut encoder = png::Encoder::new(BufWriter::new(file), width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder
        .write_header()
        .with_context(|| format!("{}: cannot write PNG", path.display()))?;
    writer
        .write_image_data(rgb)
        .with_context(|| format!("{}: cannot write PNG", path.display()))?;
    writer
        .finish()
        .with_context(|| format!("{}: cannot write PNG", path.display()))?;
    Ok(())
}

/// A file name part from a display name (prompt set, scorer): letters, digits, `-`, `_`, `.`.
fn file_part(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// How charts name a cell's setting: `label@strength`, plus the model and seed when the
/// experiment has several of them (otherwise they would draw on top of each other).
struct Naming {
    models: bool,
    seeds: bool,
}

impl Naming {
    fn of(experiment: &Experiment) -> Self {
        let first = &experiment.cells[0].config;
        Self {
            models: experiment
                .cells
                .iter()
                .any(|c| c.config.model.name != first.model.name),
            seeds: experiment.cells.iter().any(|c| c.config.seed != first.seed),
        }
    }

    /// What sets a series apart beyond the method label: model and seed, when they vary.
    fn suffix(&self, cell: &CellOutputs) -> String {
        let mut s = String::new();
        if self.models {
            s += &format!(" · {}", cell.config.model.name);
        }
        if self.seeds {
            s += &format!(" · seed {}", cell.config.seed);
        }
        s
    }

    fn setting(&self, cell: &CellOutputs) -> String {
        format!("{}{}", cell.method_setting(), self.suffix(cell))
    }
}

/// A pixel rectangle `(left, top, right, bottom)`.
type Rect = (i32, i32, i32, i32);

fn overlap(a: Rect, b: Rect) -> i64 {
    let w = (a.2.min(b.2) - a.0.max(b.0)).max(0) as i64;
    let h = (a.3.min(b.3) - a.1.max(b.1)).max(0) as i64;
    w * h
}

/// Places short labels next to points without covering each other or the points: each label
/// tries eight positions around its point and takes the first free one inside the bounds (or
/// the least covered).
struct LabelPlacer {
    taken: Vec<Rect>,
    bounds: Rect,
}

impl LabelPlacer {
    fn new(bounds: Rect) -> Self {
        Self {
            taken: Vec::new(),
            bounds,
        }
    }

    /// Marks a point marker of `radius` pixels as taken.
    fn block_point(&mut self, (x, y): (i32, i32), radius: i32) {
        self.taken
            .push((x - radius, y - radius, x + radius, y + radius));
    }

    /// Top-left corner for a `w`×`h` label next to the point at `(x, y)`.
    fn place(&mut self, (x, y): (i32, i32), (w, h): (i32, i32)) -> (i32, i32) {
        let gap = 7;
        let candidates = [
            (x + gap, y - h - gap + 2),
            (x + gap, y + gap - 2),
            (x - w - gap, y - h - gap + 2),
            (x - w - gap, y + gap - 2),
            (x + gap + 2, y - h / 2),
            (x - w - gap - 2, y - h / 2),
            (x - w / 2, y - h - gap - 3),
            (x - w / 2, y + gap + 3),
        ];
        let cost = |&(left, top): &(i32, i32)| -> i64 {
            let rect = (left, top, left + w, top + h);
            let inside = rect.0 >= self.bounds.0
                && rect.1 >= self.bounds.1
                && rect.2 <= self.bounds.2
                && rect.3 <= self.bounds.3;
            let covered: i64 = self.taken.iter().map(|&t| overlap(rect, t)).sum();
            covered + if inside { 0 } else { 1_000_000 }
        };
        let best = candidates
            .iter()
            .enumerate()
            .min_by_key(|(i, c)| (cost(c), *i))
            .map(|(_, c)| *c)
            .expect("eight candidates");
        self.taken.push((best.0, best.1, best.0 + w, best.1 + h));
        best
    }
}

/// Text size in pixels as the backend will draw it.
fn text_size<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    text: &str,
    style: &TextStyle,
) -> Result<(i32, i32)>
where
    DB::ErrorType: 'static,
{
    let (w, h) = area
        .estimate_text_size(text, style)
        .map_err(|e| anyhow!("cannot measure text {text:?}: {e}"))?;
    Ok((w as i32, h as i32))
}

/// A five-pointed star centred at a pixel, `r` pixels to its tips: the baseline's marker.
fn star(center: (i32, i32), r: f64) -> Vec<(i32, i32)> {
    (0..10)
        .map(|k| {
            let radius = if k % 2 == 0 { r } else { r * 0.45 };
            let angle = -std::f64::consts::FRAC_PI_2 + k as f64 * std::f64::consts::PI / 5.0;
            (
                center.0 + (radius * angle.cos()).round() as i32,
                center.1 + (radius * angle.sin()).round() as i32,
            )
        })
        .collect()
}

/// What `write_charts` made, and what it could not make and why.
#[derive(Debug, Clone, Default)]
pub struct ChartsOutcome {
    /// PNG and SVG files, in the order written.
    pub files: Vec<PathBuf>,
    /// Charts skipped, with the reason (shown in the report).
    pub notes: Vec<String>,
}

/// Draws every chart the experiment has data for into `charts_dir` (created if needed);
/// `agreement` is [`crate::scorer_agreement`] of the same experiment, `fairness` its pairings,
/// paired differences and audit.
pub fn write_charts(
    experiment: &Experiment,
    agreement: &[ScorerAgreement],
    fairness: &Fairness<'_>,
    charts_dir: &Path,
) -> Result<ChartsOutcome> {
    std::fs::create_dir_all(charts_dir)
        .with_context(|| format!("{}: cannot create", charts_dir.display()))?;
    let mut outcome = ChartsOutcome::default();
    frontier::write_all(experiment, fairness, charts_dir, &mut outcome)?;
    bars::write_group_charts(experiment, charts_dir, &mut outcome)?;
    bars::write_cost_chart(experiment, charts_dir, &mut outcome)?;
    agreement::write_agreement_charts(agreement, charts_dir, &mut outcome)?;
    Ok(outcome)
}
