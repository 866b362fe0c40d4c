//! The direct engine: a mix release appended to a base image as a few
//! deterministic layers, config and manifest written into the OCI layout.
//! No Docker, no root. Layers whose content is already in the layout (same
//! diff ID) are reused without compressing them again.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::error::{Context as _, Result};

use super::base::{self, BaseImage, BaseSource};
use super::{BuildJob, BuildOutcome, LayerOutcome};
use crate::cache::Memo;
use crate::image::mutate::{self, AppendedLayer, ConfigSpec, rfc3339_from_epoch};
use crate::release::project;
use crate::vcs::Vcs;

use crate::image::{Descriptor, Digest, Platform, media};
use crate::layer::{self, LayerOptions, LayerStats, PlannedLayer};
use crate::layout::{FinishedBlob, Layout};
use crate::preflight::{self, BaseRootfs, PreflightError, ProblemKind};
use crate::progress::Progress;
use crate::release::INSTALL_DIR;
use crate::release::{PlanOptions, Release};
use crate::settings::{BaseSpec, BuildSettings};

use super::packages::{
    Packages, PackagesLayer, debian_architecture, image_facts, packages_base, packages_onto,
};

/// The direct engine: find (or make) the release, get and verify the base,
/// then [`DirectBuild`].
pub struct DirectEngine;

impl super::Engine for DirectEngine {
    fn name(&self) -> &'static str {
        "direct"
    }

    async fn build(&self, job: &BuildJob<'_>) -> Result<BuildOutcome> {
        let s = job.build;
        let progress = job.progress;
        // Held until the image is tagged: `gc` waits for it.
        let work = job.layout.work()?;
        job.layout.flush_in_background();
        if s.mix {
            project::run_mix_release(&s.project)?;
        }
        let release_path = match &s.release {
            Some(p) => p.clone(),
            None => {
                let p = project::find_release(&s.project)?;
                progress.say(format!("using release {}", p.display()));
                p
            }
        };
        // git's answers (three processes) come while the release is read.
        let vcs = {
            let project = s.project.clone();
            std::thread::spawn(move || Vcs::discover(&project))
        };
        let release = Release::open(&release_path, work.dir(), s.release_limits)?;
        let tags = if s.tags.is_empty() {
            vec![project::default_tag(release.version())]
        } else {
            s.tags.clone()
        };
        for t in &tags {
            crate::settings::validate_tag(t)?;
        }
        let cache = Layout::create_or_open(job.cache_dir.join("bases"))
            .with_context(|| format!("opening the base image cache {}", job.cache_dir.display()))?;
        let _cache_work = cache.work()?;
        let memo = Memo::new(job.cache_dir);
        let source = BaseSource {
            client: job.pull_client,
            cache: &cache,
            progress,
            memo: Some(&memo),
        };
        let packages = Packages::new(
            &s.debian,
            s.offline,
            job.cache_dir,
            job.layout,
            &memo,
            progress,
        );
        let (base, packages_layer, to_copy) = match &s.base {
            BaseSpec::Image(r) => {
                let base = base::resolve(r, release.platform(), &source).await?;
                // The base's blobs first (verified), so the layout will hold
                // the whole image; those verified before are copied as the
                // build runs.
                let (base, to_copy) =
                    base::install(base, r, release.platform(), job.layout, &source).await?;
                let layer = if s.debian.packages.is_empty() {
                    None
                } else {
                    Some(tokio::task::block_in_place(|| {
                        packages_onto(&packages, &base, &release)
                    })?)
                };
                (base, layer, to_copy)
            }
            BaseSpec::Debian(_) | BaseSpec::DebianAuto => {
                let base =
                    BaseImage::from_packages(&s.base.to_string(), release.platform(), job.layout)?;
                let layer =
                    tokio::task::block_in_place(|| packages_base(&packages, &s.base, &release))?;
                (base, Some(layer), Vec::new())
            }
        };
        let vcs = vcs
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        let build = DirectBuild {
            settings: s,
            release: &release,
            base: &base,
            packages: packages_layer.as_ref(),
            debian: Some(&packages),
            layout: job.layout,
            vcs: &vcs,
            tags: &tags,
            progress,
            memo: &memo,
        };
        tokio::task::block_in_place(|| build.run(&to_copy))
    }
}

/// Inputs of a direct build.
pub struct DirectBuild<'a> {
    /// Validated settings.
    pub settings: &'a BuildSettings,
    /// The release.
    pub release: &'a Release,
    /// The base image (blobs in its own layout).
    pub base: &'a BaseImage,
    /// The Debian packages layer on top of it, if any.
    pub(super) packages: Option<&'a PackagesLayer>,
    /// Debian's archive, for preflight's hints.
    pub(super) debian: Option<&'a Packages<'a>>,
    /// Where the image goes.
    pub layout: &'a Layout,
    /// Git facts for labels.
    pub vcs: &'a Vcs,
    /// Tags to set.
    pub tags: &'a [String],
    /// Progress display.
    pub progress: &'a Progress,
    /// Remembered diff IDs and preflight passes.
    pub memo: &'a Memo,
}

impl DirectBuild<'_> {
    /// Build the image; tags are moved only once every blob is stored,
    /// the base's blobs `to_copy` (left by [`base::install`], verified
    /// before) among them: copied on a thread of their own meanwhile.
    pub fn run(&self, to_copy: &[Digest]) -> Result<BuildOutcome> {
        let s = self.settings;
        let release = self.release;
        let base = self.base;
        let release_platform = release.platform().clone();
        if !release_platform.satisfies(&base.platform) {
            let e = PreflightError::PlatformMismatch {
                release: release_platform.to_string(),
                base: base.platform.to_string(),
                base_name: base.name.clone(),
            };
            if s.allow_platform_mismatch {
                self.progress.say(format!("warning: {e}"));
            } else {
                return Err(e.into());
            }
        }

        // The base's blobs are in the layout already or to copy (`base::install`).
        debug_assert!(
            base.layers()
                .iter()
                .all(|l| self.layout.has_blob(&l.digest) || to_copy.contains(&l.digest))
        );

        let plan = release.plan(&PlanOptions {
            own_apps: s.own_apps.clone(),
            assets_min_bytes: s.assets_layer_min,
        })?;
        let opts = LayerOptions {
            codec: s.compression,
            ..LayerOptions::default()
        };
        let fingerprints = plan
            .layers
            .iter()
            .map(|l| layer::fingerprint(l, &opts))
            .collect::<Result<Vec<_>, _>>()?;

        if !s.skip_preflight {
            self.preflight(&plan)?;
        }
        let known = self.layout.known_layers_of(opts.media_type());
        let mut outcomes: Vec<LayerOutcome> = base
            .layers()
            .iter()
            .map(|l| LayerOutcome {
                name: "base".into(),
                description: format!("from {}", base.name),
                digest: l.digest.clone(),
                size: l.size,
                diff_id: None,
                reused: true,
            })
            .collect();
        let mut appended = Vec::new();
        if let Some(p) = self.packages {
            appended.push(AppendedLayer {
                diff_id: p.diff_id.clone(),
                created_by: p.created_by.clone(),
                comment: None,
            });
            outcomes.push(LayerOutcome {
                name: "packages".into(),
                description: format!("Debian {} packages ({})", p.suite, p.count),
                digest: p.descriptor.digest.clone(),
                size: p.descriptor.size,
                diff_id: Some(p.diff_id.clone()),
                reused: p.reused,
            });
        }
        // The diff ID of each layer whose files are unchanged since an
        // earlier build (the same fingerprint) is remembered; the others
        // take a cheap pass (tar + sha256), side by side, when the layout
        // holds layers they might be.
        let remembered: Vec<Option<LayerStats>> = fingerprints
            .iter()
            .map(|fp| {
                fp.as_ref()
                    .and_then(|fp| self.memo.get("diffid", fp))
                    .and_then(|v| parse_stats(&v))
            })
            .collect();
        let hashed = hash_side_by_side(&plan.layers, &remembered, &opts, &known)?;
        for ((fp, r), st) in fingerprints.iter().zip(&remembered).zip(&hashed) {
            if let (Some(fp), None, Some(st)) = (fp, r, st) {
                self.memo.put("diffid", fp, &format_stats(st));
            }
        }
        // A written layer is made durable (fsync, rename) on a thread of
        // its own while the next one is compressed; all are stored before
        // the config and manifest that name them.
        std::thread::scope(|scope| -> Result<()> {
            let layout = self.layout;
            let mut storing = vec![scope.spawn(move || {
                to_copy.iter().try_for_each(|d| {
                    layout
                        .copy_verified_blob_from(&base.layout, d)
                        .with_context(|| {
                            format!(
                                "copying the base {} into {}",
                                base.name,
                                layout.root().display()
                            )
                        })
                })
            })];
            let layers = plan.layers.iter().zip(&fingerprints);
            for ((planned, fp), (remembered, hashed)) in
                layers.zip(remembered.into_iter().zip(hashed))
            {
                let (stats, blob, reused, pending) =
                    self.make_layer(planned, fp.as_ref(), remembered.or(hashed), &opts, &known)?;
                if let Some(p) = pending {
                    storing.push(scope.spawn(move || p.store().map(|_| ()).map_err(Into::into)));
                }
                let (digest, size) = (blob.digest, blob.size);
                appended.push(AppendedLayer {
                    diff_id: stats.diff_id.clone(),
                    created_by: format!(
                        "guildhall-image: {} ({})",
                        planned.name, planned.description
                    ),
                    comment: None,
                });
                outcomes.push(LayerOutcome {
                    name: planned.name.clone(),
                    description: planned.description.clone(),
                    digest,
                    size,
                    diff_id: Some(stats.diff_id),
                    reused,
                });
            }
            for h in storing {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
            }
            Ok(())
        })?;

        let created_epoch = s.source_date_epoch.or(self.vcs.commit_time).unwrap_or(0);
        let created = rfc3339_from_epoch(created_epoch);
        let mut labels = BTreeMap::new();
        labels.insert(
            "org.opencontainers.image.title".to_owned(),
            release.name().to_owned(),
        );
        labels.insert(
            "org.opencontainers.image.version".to_owned(),
            release.version().to_owned(),
        );
        labels.insert(
            "org.opencontainers.image.created".to_owned(),
            created.clone(),
        );
        if let Some(src) = s.source.clone().or_else(|| self.vcs.source.clone()) {
            labels.insert("org.opencontainers.image.source".to_owned(), src);
        }
        if let Some(rev) = s.revision.clone().or_else(|| self.vcs.revision.clone()) {
            labels.insert("org.opencontainers.image.revision".to_owned(), rev);
        }
        if let Some(name) = &base.registry_name {
            labels.insert(
                "org.opencontainers.image.base.name".to_owned(),
                name.clone(),
            );
        }
        if base.from_packages {
            tracing::debug!(
                "org.opencontainers.image.base.* left out: {} is made from Debian packages, no registry knows it",
                base.name
            );
        } else {
            labels.insert(
                "org.opencontainers.image.base.digest".to_owned(),
                base.manifest_digest.to_string(),
            );
        }
        labels.extend(s.labels.clone());

        let spec = ConfigSpec {
            created: Some(created),
            user: Some(s.user.clone()),
            working_dir: Some(INSTALL_DIR.to_owned()),
            cmd: Some(s.cmd.clone().unwrap_or_else(|| release.start_command())),
            env: s.env.clone(),
            exposed_ports: s.ports.clone(),
            labels,
            layers: appended,
        };
        let config = mutate::append(&base.config, &spec).to_bytes();
        let (config_digest, config_size) = self.layout.write_blob(&config)?;
        let layers: Vec<Descriptor> = base
            .layers()
            .iter()
            .cloned()
            // The packages layer is always gzip (preflight and the next
            // build read it like a base layer); the release's follow
            // `--compression`.
            .chain(self.packages.map(|p| p.descriptor.clone()))
            .chain(
                outcomes[base.layers().len() + usize::from(self.packages.is_some())..]
                    .iter()
                    .map(|o| Descriptor::new(opts.media_type(), o.digest.clone(), o.size)),
            )
            .collect();
        let manifest = mutate::manifest(
            Descriptor::new(media::OCI_CONFIG, config_digest.clone(), config_size),
            &layers,
        )
        .to_bytes();
        let (digest, size) = self.layout.write_blob(&manifest)?;
        self.layout
            .set_tags(media::OCI_MANIFEST, &digest, self.tags)?;
        Ok(BuildOutcome {
            digest,
            size,
            config: config_digest,
            platform: Platform::to_string(&base.platform),
            tags: self.tags.to_vec(),
            layout: self.layout.root().display().to_string(),
            release: format!("{} {}", release.name(), release.version()),
            layers: outcomes,
        })
    }
}

impl DirectBuild<'_> {
    /// One release layer: reused when the layout already holds its content
    /// (its diff ID, `stats`, known from the memo or hashed), else written
    /// and its diff ID remembered under its fingerprint `fp`. A written
    /// layer comes back not yet stored: the caller stores it
    /// ([`FinishedBlob::store`]).
    fn make_layer(
        &self,
        planned: &PlannedLayer,
        fp: Option<&Digest>,
        stats: Option<LayerStats>,
        opts: &LayerOptions,
        known: &HashMap<Digest, Descriptor>,
    ) -> Result<(LayerStats, Descriptor, bool, Option<FinishedBlob>)> {
        if let Some(st) = &stats {
            if let Some(b) = known.get(&st.diff_id) {
                return Ok((st.clone(), b.clone(), true, None));
            }
        }
        let task = self.progress.task(
            format!("layer {}", planned.name),
            stats.map(|st| st.uncompressed_size),
        );
        let w = self.layout.blob_writer()?;
        let (written, w) = layer::write_layer(planned, opts, w, Some(&task))?;
        // What was written is the truth (a file may have changed since the
        // files were fingerprinted); remember it.
        if let Some(fp) = fp {
            self.memo.put("diffid", fp, &format_stats(&written));
        }
        let finished = w.finish(None)?;
        task.finish("done");
        Ok((
            written,
            Descriptor::new(opts.media_type(), finished.digest().clone(), finished.len()),
            false,
            Some(finished),
        ))
    }

    /// Check the release against the base, unless this base already passed
    /// with these very ELF files (remembered by fingerprint).
    fn preflight(&self, plan: &crate::release::LayerPlan) -> Result<()> {
        let base = self.base;
        // The files preflight reads, by metadata (the same set it checks).
        let prefix = Path::new(crate::release::INSTALL_DIR.trim_start_matches('/'));
        let files = layer::fingerprint_of(
            "preflight candidates v2",
            self.release.tree(),
            plan.layers.iter().flat_map(|l| {
                l.entries().filter(|e| {
                    e.dest
                        .strip_prefix(prefix)
                        .is_ok_and(crate::release::is_elf_candidate)
                })
            }),
        )?;
        let key = crate::image::Digest::of(
            format!(
                "preflight v1 {} {} {} {}",
                base.manifest_digest,
                self.packages
                    .map(|p| p.diff_id.to_string())
                    .unwrap_or_default(),
                files,
                self.settings.allow_platform_mismatch
            )
            .as_bytes(),
        );
        if self.memo.get("preflight", &key).as_deref() == Some("ok") {
            tracing::debug!("preflight passed before for these files on this base");
            return Ok(());
        }
        let t = self.progress.task("preflight", None);
        let rootfs = self.base_rootfs()?;
        let mut report = preflight::check(self.release, &rootfs, &base.platform);
        if self.settings.allow_platform_mismatch {
            // Already said as a warning.
            report
                .problems
                .retain(|p| !matches!(p.kind, ProblemKind::PlatformMismatch { .. }));
        }
        t.finish(if report.problems.is_empty() {
            "ok"
        } else {
            "failed"
        });
        if !report.problems.is_empty() {
            report.hint = self.preflight_hint(&report);
        }
        report.into_result(&base.name)?;
        self.memo.put("preflight", &key, "ok");
        Ok(())
    }
}

impl DirectBuild<'_> {
    /// What would fix preflight's problems, from Debian itself: the package
    /// of each missing library by the `Contents` index of the base's suite
    /// (as `--package` flags), and for a symbol version no package of the
    /// suite has, a newer suite. `None` (the built-in table's hint stays)
    /// when the base is not Debian or the archive cannot be reached.
    fn preflight_hint(&self, report: &preflight::PreflightReport) -> Option<String> {
        let debian = self.debian?;
        let arch = debian_architecture(&self.release.platform().clone()).ok()?;
        let suite = match (self.packages, &self.settings.base) {
            (Some(p), _) => p.suite.clone(),
            (None, BaseSpec::Image(_)) => {
                let facts = image_facts(self.base, self.memo).ok()?;
                debian.suite_of(&facts, &self.base.name).ok()?
            }
            (None, _) => return None,
        };
        let mut lines = Vec::new();
        let missing: std::collections::BTreeSet<String> = report
            .problems
            .iter()
            .filter_map(|p| match &p.kind {
                ProblemKind::MissingLibrary { library, .. } => Some(library.clone()),
                _ => None,
            })
            .collect();
        if !missing.is_empty() {
            match debian.library_packages(&suite, arch, &missing) {
                Ok(Ok(pkgs)) => lines.push(format!(
                    "Debian {suite} ships them (by its Contents index); add: {}",
                    pkgs.iter()
                        .map(|p| format!("--package {p}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                )),
                Ok(Err(unknown)) => lines.push(format!(
                    "no package of Debian {suite} ships {} where the dynamic linker looks",
                    unknown.join(", ")
                )),
                Err(e) => {
                    tracing::debug!("no Contents hint: {e}");
                    return None;
                }
            }
        }
        let versions: Vec<&str> = report
            .problems
            .iter()
            .filter_map(|p| match &p.kind {
                ProblemKind::MissingVersion { version, .. } => Some(version.as_str()),
                _ => None,
            })
            .collect();
        if !versions.is_empty() {
            lines.push(format!(
                "no package fixes a missing symbol version ({}): the release was built on a newer \
                 system than Debian {suite}. Use a base of the suite it was built for \
                 (--base deb:auto picks the oldest that fits; --base deb:trixie, debian:trixie-slim), \
                 or build the release on {suite}",
                versions.join(", ")
            ));
        }
        (!lines.is_empty()).then(|| lines.join("\n"))
    }

    /// The index of the base's files: remembered per base manifest (it is
    /// as much part of the cached base as its blobs), else read from its
    /// layers, decompressing them.
    fn base_rootfs(&self) -> Result<BaseRootfs> {
        let base = self.base;
        let key = crate::image::Digest::of(
            format!(
                "rootfs v1 {} {}",
                base.manifest_digest,
                self.packages
                    .map(|p| p.diff_id.to_string())
                    .unwrap_or_default()
            )
            .as_bytes(),
        );
        if let Some(fs) = self
            .memo
            .get("rootfs", &key)
            .and_then(|j| serde_json::from_str::<BaseRootfs>(&j).ok())
        {
            return Ok(fs);
        }
        // The base's layers from where they came (they may not be copied
        // here yet), the packages layer from this layout.
        let mut readers = base.layout.layer_readers(base.layers())?;
        readers.extend(
            self.layout
                .layer_readers(self.packages.map(|p| &p.descriptor))?,
        );
        let fs = BaseRootfs::from_layers(readers)
            .with_context(|| format!("reading the base {}'s files", base.name))?;
        if let Ok(j) = serde_json::to_string(&fs) {
            self.memo.put("rootfs", &key, &j);
        }
        Ok(fs)
    }
}

/// The diff IDs of the layers not `remembered`, hashed on a thread each,
/// when the layout holds layers they might be: the pass that finds an
/// unchanged layer costs a core's time, not the sum. `None` for the
/// others, and for all when there is nothing to reuse.
fn hash_side_by_side(
    layers: &[PlannedLayer],
    remembered: &[Option<LayerStats>],
    opts: &LayerOptions,
    known: &HashMap<Digest, Descriptor>,
) -> Result<Vec<Option<LayerStats>>> {
    if known.is_empty() {
        return Ok(vec![None; layers.len()]);
    }
    std::thread::scope(|scope| {
        let running: Vec<_> = layers
            .iter()
            .zip(remembered)
            .map(|(l, r)| {
                r.is_none()
                    .then(|| scope.spawn(move || layer::diff_id(l, opts)))
            })
            .collect();
        running
            .into_iter()
            .map(|h| match h {
                None => Ok(None),
                Some(h) => match h.join() {
                    Ok(r) => Ok(Some(r?)),
                    Err(panic) => std::panic::resume_unwind(panic),
                },
            })
            .collect()
    })
}

fn format_stats(st: &LayerStats) -> String {
    format!("{} {}", st.diff_id, st.uncompressed_size)
}

fn parse_stats(v: &str) -> Option<LayerStats> {
    let (d, n) = v.split_once(' ')?;
    Some(LayerStats {
        diff_id: d.parse().ok()?,
        uncompressed_size: n.parse().ok()?,
        entries: 0,
    })
}
