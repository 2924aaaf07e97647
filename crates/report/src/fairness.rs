//! Everything the report needs for fair comparisons, computed once: each cell's baseline
//! ([`crate::pairing`]), the paired differences ([`crate::paired`]) and the confound audit
//! ([`crate::audit`]).

use anyhow::Result;

use crate::audit::{audit_cells, CellAudit};
use crate::load::Experiment;
use crate::paired::{paired_differences, PairedRow};
use crate::pairing::{pair_cells, CellPairing};

#[derive(Debug, Clone)]
pub struct Fairness<'a> {
    pub pairings: Vec<CellPairing<'a>>,
    pub paired: Vec<PairedRow>,
    pub audits: Vec<CellAudit<'a>>,
}

impl<'a> Fairness<'a> {
    /// Pairs the cells, computes the paired differences (reading generations and scores) and
    /// audits every cell.
    pub fn of(experiment: &'a Experiment) -> Result<Self> {
        let pairings = pair_cells(experiment);
        let paired = paired_differences(&pairings)?;
        let audits = audit_cells(&pairings);
        Ok(Self {
            pairings,
            paired,
            audits,
        })
    }

    /// The audit of one cell.
    pub fn audit_of(&self, cell_id: &str) -> Option<&CellAudit<'a>> {
        self.audits.iter().find(|a| a.cell.id() == cell_id)
    }
}
