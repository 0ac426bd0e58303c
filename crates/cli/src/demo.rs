//! `vmnap demo`: the whole method on a throwaway network.

pub fn run() -> anyhow::Result<()> {
    anyhow::bail!("the demo is not built yet")
}
