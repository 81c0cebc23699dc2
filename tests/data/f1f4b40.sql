-- A database made by digest at commit f1f4b40 (the last version before migrations), written by
-- that version's own code: `digest ingest` of 14 lines of the project's sample feed, `profiles sync`
-- of the example profiles, `send --date 2026-11-02` to the outbox, a click, a thumbs-down, a view
-- and `retrain`; then `sqlite3 .dump`. tests/test_migrations.py upgrades it.
PRAGMA foreign_keys=OFF;
BEGIN TRANSACTION;
CREATE TABLE paper (
	id INTEGER NOT NULL, 
	arxiv_id VARCHAR(64), 
	title_key VARCHAR(512) NOT NULL, 
	title VARCHAR NOT NULL, 
	abstract VARCHAR NOT NULL, 
	authors JSON NOT NULL, 
	categories JSON NOT NULL, 
	published DATETIME, 
	updated DATETIME, 
	version INTEGER, 
	url VARCHAR, 
	pdf_url VARCHAR, 
	source VARCHAR(64) NOT NULL, 
	first_seen DATETIME NOT NULL, 
	popularity FLOAT, 
	PRIMARY KEY (id)
);
INSERT INTO paper VALUES(1,NULL,'draft trees with adaptive depth for speculative decoding on commodity gpus','Draft Trees with Adaptive Depth for Speculative Decoding on Commodity GPUs','Speculative decoding accelerates autoregressive generation by letting a small draft model propose tokens that a large target model verifies in parallel. We introduce DepthFlex, which grows a draft token tree whose depth adapts at every step to the running acceptance rate. On a 13B target model served on consumer GPUs, DepthFlex raises mean accepted tokens per verification from 2.9 to 4.1 and cuts end-to-end latency by 38% without changing the output distribution.','["Oskar Lindqvist-Mara", "Nadia Ferreira", "Kenji Hollis"]','["cs.CL", "cs.LG"]','2026-11-16 00:00:00.000000',NULL,NULL,'https://example.org/digest-sample/sample-001',NULL,'jsonl','2026-11-24 06:04:15.692146',NULL);
INSERT INTO paper VALUES(2,NULL,'correlation aware matching decoders for surface codes under circuit level noise','Correlation-Aware Matching Decoders for Surface Codes Under Circuit-Level Noise','Realistic quantum hardware exhibits correlated errors that standard matching decoders for the surface code ignore. We estimate pairwise correlations between detection events from syndrome statistics collected on the device and use them to reweight edges of the decoding graph on the fly. In circuit-level simulations of the rotated surface code, the decoder raises the error correction threshold from 0.81% to 0.93% and lowers logical error rates by up to 4x at distance 11.','["Aurelio Benedetti", "Hana Kobayashi-Reid", "Obinna Nwachukwu"]','["quant-ph"]','2026-11-16 00:00:00.000000',NULL,NULL,'https://example.org/digest-sample/sample-002',NULL,'jsonl','2026-11-24 06:04:15.692146',NULL);
INSERT INTO paper VALUES(3,NULL,'equivariant message passing for binding affinity prediction with pocket graphs','Equivariant Message Passing for Binding Affinity Prediction with Pocket Graphs','Predicting ligand binding affinity requires reasoning over three-dimensional interactions between a small molecule and its target binding pocket. We construct heterogeneous pocket graphs and apply an E(3)-equivariant message passing network that exchanges information along covalent and non-covalent edges. On the DockAff-2K benchmark, our graph neural network lowers root-mean-square error to 1.18 pKd units and ranks active compounds better than docking scores in virtual screening.','["Henrike Solberg", "Kwame Asante", "Ji-woo Baek"]','["q-bio.BM", "cs.LG", "physics.chem-ph"]','2026-11-16 00:00:00.000000',NULL,NULL,'https://example.org/digest-sample/sample-003',NULL,'jsonl','2026-11-24 06:04:15.692146',NULL);
INSERT INTO paper VALUES(4,NULL,'sim to real transfer of dexterous in hand reorientation with tactile domain randomization','Sim-to-Real Transfer of Dexterous In-Hand Reorientation with Tactile Domain Randomization','Policies trained in simulation for in-hand object reorientation often fail on hardware because tactile signals are poorly modeled. We randomize tactile sensor noise, contact stiffness, and fingertip friction during reinforcement learning and add a tactile encoder shared between simulation and the real robot. On a four-fingered robot hand, the transferred policy reorients 18 unseen objects with an 81% success rate, up from 47% without tactile randomization.','["Keoni Halvorsen", "Zofia Marczak", "Emeka Obi"]','["cs.RO", "cs.LG"]','2026-11-16 00:00:00.000000',NULL,NULL,'https://example.org/digest-sample/sample-004',NULL,'jsonl','2026-11-24 06:04:15.692146',NULL);
INSERT INTO paper VALUES(5,NULL,'predicting conformational ensembles of intrinsically disordered proteins from sequence','Predicting Conformational Ensembles of Intrinsically Disordered Proteins from Sequence','Intrinsically disordered protein regions lack a single folded structure, so static protein structure predictors describe them poorly. We train a sequence-conditioned generative model on molecular dynamics trajectories of 3,200 disordered regions to sample conformational ensembles. Predicted ensembles reproduce experimental radii of gyration with a mean error of 4% and recover transient helical segments observed in NMR chemical shifts.','["Rahel Gebremedhin", "Torsten Ahlgren", "Yuki Nakamura-Cole"]','["q-bio.BM", "cs.LG"]','2026-11-16 00:00:00.000000',NULL,NULL,'https://example.org/digest-sample/sample-005',NULL,'jsonl','2026-11-24 06:04:15.692146',NULL);
INSERT INTO paper VALUES(6,NULL,'medium range global weather forecasting with a spherical transformer','Medium-Range Global Weather Forecasting with a Spherical Transformer','Data-driven weather models now rival numerical weather prediction at medium range. We train a transformer operating on a spherical tessellation of the globe using 40 years of atmospheric reanalysis at 0.5-degree resolution. At a 10-day lead time, the model''s 500 hPa geopotential height error is 6% lower than a physics-based ensemble control forecast, and a single global forecast runs in under a minute on one accelerator.','["Ingrid Halloran", "Mat\u00edas Corval\u00e1n", "Sadia Rahman"]','["physics.ao-ph", "cs.LG"]','2026-11-16 00:00:00.000000',NULL,NULL,'https://example.org/digest-sample/sample-006',NULL,'jsonl','2026-11-24 06:04:15.692146',NULL);
INSERT INTO paper VALUES(7,NULL,'hard negative mining with query rewrites for dense passage retrieval','Hard Negative Mining with Query Rewrites for Dense Passage Retrieval','Dense retrievers depend heavily on the quality of the hard negatives used during contrastive training. We generate paraphrased and underspecified rewrites of each training query and mine negative passages that are close to the rewrites but unsupported by the gold passage. On the ArchiveQA and MedLookup collections, this raises recall@20 by 6.8 and 4.1 points over BM25-mined negatives, with gains concentrated on ambiguous queries.','["Marisol Etxeberria", "Rohan Iyengar", "Gideon Falk"]','["cs.IR", "cs.CL"]','2026-11-16 00:00:00.000000',NULL,NULL,'https://example.org/digest-sample/sample-007',NULL,'jsonl','2026-11-24 06:04:15.692146',NULL);
INSERT INTO paper VALUES(8,NULL,'training free region editing in latent diffusion via attention map reweighting','Training-Free Region Editing in Latent Diffusion via Attention Map Reweighting','Localized image editing with text-to-image diffusion models often alters regions the user wanted preserved. We reweight cross-attention maps during denoising so that edit tokens only influence a user-specified mask, and we blend preserved latents back at each step. On our EditMask-500 benchmark, the method improves background preservation LPIPS by 31% over prompt-swapping baselines without any fine-tuning.','["Yara Haddad", "Callum Fitzgerald", "Mei-Lin Zhou"]','["cs.CV", "cs.LG"]','2026-11-16 00:00:00.000000',NULL,NULL,'https://example.org/digest-sample/sample-008',NULL,'jsonl','2026-11-24 06:04:15.692146',NULL);
INSERT INTO paper VALUES(9,NULL,'probabilistic precipitation nowcasting from radar mosaics with generative ensembles','Probabilistic Precipitation Nowcasting from Radar Mosaics with Generative Ensembles','Short-term precipitation forecasts must capture the uncertainty of convective storm development. We train a conditional generative model on five years of composite radar reflectivity to produce ensembles of 90-minute rainfall nowcasts. Compared with optical-flow extrapolation, the ensembles improve the continuous ranked probability score by 18% and better locate intense rainfall above 10 mm per hour.','["Sadia Rahman", "Ingrid Halloran", "Jonas Eklund"]','["physics.ao-ph", "stat.ML"]','2026-11-16 00:00:00.000000',NULL,NULL,'https://example.org/digest-sample/sample-009',NULL,'jsonl','2026-11-24 06:04:15.692146',NULL);
INSERT INTO paper VALUES(10,NULL,'variational quantum eigensolvers with symmetry preserving adaptive ansatze','Variational Quantum Eigensolvers with Symmetry-Preserving Adaptive Ansätze','Hardware-efficient ansätze for the variational quantum eigensolver often break particle-number and spin symmetries, wasting parameters and hurting trainability. We grow the ansatz adaptively from a pool of symmetry-preserving two-qubit gates ranked by energy gradient magnitude. For lattice spin Hamiltonians and small fermionic models on 12 simulated qubits, the method reaches ground-state energy errors below 0.001 with 45% fewer two-qubit gates than fixed-layer circuits.','["Lindiwe Mahlangu", "Aurelio Benedetti", "Sebasti\u00e1n Ortega"]','["quant-ph"]','2026-11-16 00:00:00.000000',NULL,NULL,'https://example.org/digest-sample/sample-010',NULL,'jsonl','2026-11-24 06:04:15.692146',NULL);
INSERT INTO paper VALUES(11,NULL,'consistency distillation for four step high resolution image synthesis','Consistency Distillation for Four-Step High-Resolution Image Synthesis','Diffusion models produce high-quality images but require dozens of denoising steps at sampling time. We distill a 1024-pixel latent diffusion model into a few-step consistency model using a progressive schedule and a perceptual discriminator loss applied in decoder space. With four sampling steps, the student reaches an FID of 7.9 on a held-out caption set, close to 7.1 for the 50-step teacher, while generating images 11x faster.','["Bastian Krogh", "Nomvula Dlamini"]','["cs.CV", "cs.LG"]','2026-11-16 00:00:00.000000',NULL,NULL,'https://example.org/digest-sample/sample-011',NULL,'jsonl','2026-11-24 06:04:15.692146',NULL);
INSERT INTO paper VALUES(12,NULL,'learning quadruped locomotion on deformable terrain from proprioception alone','Learning Quadruped Locomotion on Deformable Terrain from Proprioception Alone','Legged robots walking on sand, mud, or snow face terrain dynamics that are hard to simulate accurately. We train a quadruped locomotion policy with reinforcement learning in a simulator extended with a granular-media contact model, using only joint encoders and an inertial measurement unit as input. Deployed zero-shot, the robot traverses 25 meters of loose sand at 0.8 m/s and recovers from sinking events that stall a model-predictive control baseline.','["Valentina Rossetti", "Keoni Halvorsen", "Daniel Mwangi"]','["cs.RO", "cs.LG", "eess.SY"]','2026-11-16 00:00:00.000000',NULL,NULL,'https://example.org/digest-sample/sample-012',NULL,'jsonl','2026-11-24 06:04:15.692146',NULL);
INSERT INTO paper VALUES(13,NULL,'cell type annotation across atlases with contrastive single cell embeddings','Cell Type Annotation Across Atlases with Contrastive Single-Cell Embeddings','Single-cell RNA sequencing atlases use inconsistent cell type labels, hampering transfer of annotations to new datasets. We learn a joint embedding of cells from twelve tissue atlases with a contrastive objective that aligns cells sharing marker gene programs while correcting batch effects. Label transfer to held-out studies reaches 91% accuracy at fine-grained resolution and flags 6% of query cells as potentially novel cell types.','["Luc\u00eda Benavides", "Rahel Gebremedhin", "Idris Balogun"]','["q-bio.GN", "stat.ML"]','2026-11-17 00:00:00.000000',NULL,NULL,'https://example.org/digest-sample/sample-013',NULL,'jsonl','2026-11-24 06:04:15.692146',NULL);
INSERT INTO paper VALUES(14,NULL,'when should a generator ignore retrieved passages calibrated evidence gating','When Should a Generator Ignore Retrieved Passages? Calibrated Evidence Gating','Retrieval-augmented generation can be misled by irrelevant or contradictory retrieved passages. We train an evidence gate that estimates, for each retrieved passage, whether conditioning on it will improve answer correctness, and drops passages below a calibrated threshold. On open-domain question answering, gating reduces hallucinated answers by 27% while keeping exact-match accuracy within half a point of always-retrieve baselines.','["Sunniva Rask", "Marisol Etxeberria", "Tobenna Eze"]','["cs.CL", "cs.IR"]','2026-11-17 00:00:00.000000',NULL,NULL,'https://example.org/digest-sample/sample-014',NULL,'jsonl','2026-11-24 06:04:15.692146',NULL);
CREATE TABLE subscriber (
	id INTEGER NOT NULL, 
	email VARCHAR(320) NOT NULL, 
	name VARCHAR, 
	timezone VARCHAR NOT NULL, 
	send_at VARCHAR NOT NULL, 
	max_items INTEGER NOT NULL, 
	interests JSON NOT NULL, 
	avoid JSON NOT NULL, 
	authors JSON NOT NULL, 
	categories JSON NOT NULL, 
	active BOOLEAN NOT NULL, 
	unsubscribed_at DATETIME, 
	bounces INTEGER NOT NULL, 
	disabled_reason VARCHAR, 
	profile_file VARCHAR, 
	created_at DATETIME NOT NULL, 
	updated_at DATETIME NOT NULL, 
	PRIMARY KEY (id)
);
INSERT INTO subscriber VALUES(1,'ada@example.org','Ada','Europe/London','07:00',8,'[{"phrase": "speculative decoding", "weight": 1.0}, {"phrase": "KV cache", "weight": 2.0}, {"phrase": "mixture of experts", "weight": 1.0}, {"phrase": "retrieval-augmented generation", "weight": 1.0}]','["image generation"]','["Nadia Ferreira"]','["cs.CL"]',1,NULL,0,NULL,'config/subscribers/ada.yaml','2026-11-24 06:04:19.237156','2026-11-24 06:04:19.237156');
INSERT INTO subscriber VALUES(2,'kenji@example.org','Kenji','Asia/Tokyo','12:30',6,'[{"phrase": "sim-to-real transfer", "weight": 2.0}, {"phrase": "legged locomotion", "weight": 1.0}, {"phrase": "robotic manipulation", "weight": 1.0}, {"phrase": "reinforcement learning", "weight": 1.0}]','[]','[]','["cs.RO"]',1,NULL,0,NULL,'config/subscribers/kenji.yaml','2026-11-24 06:04:19.237156','2026-11-24 06:04:19.237156');
INSERT INTO subscriber VALUES(3,'lucia@example.org','Lucía','America/Argentina/Buenos_Aires','08:15',10,'[{"phrase": "protein structure prediction", "weight": 1.0}, {"phrase": "single-cell transcriptomics", "weight": 1.5}, {"phrase": "molecular property prediction", "weight": 1.0}, {"phrase": "drug discovery", "weight": 1.0}]','["quantum"]','["Luc\u00eda Benavides"]','["q-bio.GN", "q-bio.BM"]',1,NULL,0,NULL,'config/subscribers/lucia.yaml','2026-11-24 06:04:19.237156','2026-11-24 06:04:19.237156');
INSERT INTO subscriber VALUES(4,'sam@example.org',NULL,'America/Los_Angeles','06:45',5,'[{"phrase": "weather forecasting", "weight": 1.0}, {"phrase": "climate model emulation", "weight": 1.5}, {"phrase": "quantum error correction", "weight": 1.0}]','[]','[]','["physics.ao-ph"]',1,NULL,0,NULL,'config/subscribers/sam.yaml','2026-11-24 06:04:19.237156','2026-11-24 06:04:19.237156');
CREATE TABLE sourcestate (
	url VARCHAR(2048) NOT NULL, 
	etag VARCHAR, 
	last_modified VARCHAR, 
	checked_at DATETIME NOT NULL, 
	PRIMARY KEY (url)
);
CREATE TABLE ingestrun (
	id INTEGER NOT NULL, 
	source VARCHAR(256) NOT NULL, 
	location VARCHAR NOT NULL, 
	format VARCHAR, 
	status VARCHAR(16) NOT NULL, 
	started_at DATETIME NOT NULL, 
	seconds FLOAT NOT NULL, 
	new INTEGER NOT NULL, 
	updated INTEGER NOT NULL, 
	unchanged INTEGER NOT NULL, 
	skipped INTEGER NOT NULL, 
	errors INTEGER NOT NULL, 
	detail VARCHAR, 
	PRIMARY KEY (id)
);
INSERT INTO ingestrun VALUES(1,'small.jsonl','small.jsonl','jsonl','ok','2026-11-24 06:04:15.645667',0.076225570999667979776,14,0,0,0,0,NULL);
CREATE TABLE digest (
	id INTEGER NOT NULL, 
	subscriber_id INTEGER NOT NULL, 
	local_date DATE NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	reason VARCHAR, 
	window_start DATETIME NOT NULL, 
	window_end DATETIME NOT NULL, 
	message_id VARCHAR, 
	attempts INTEGER NOT NULL, 
	claimed_by VARCHAR, 
	sending_since DATETIME, 
	created_at DATETIME NOT NULL, 
	sent_at DATETIME, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_digest_subscriber_date UNIQUE (subscriber_id, local_date), 
	FOREIGN KEY(subscriber_id) REFERENCES subscriber (id)
);
INSERT INTO digest VALUES(1,1,'2026-11-02','sent',NULL,'2026-11-17 06:04:22.169697','2026-11-24 06:04:22.169697','<digest.20261102.1@localhost>',1,'vm:30800','2026-11-24 06:04:22.246463','2026-11-24 06:04:22.204601','2026-11-24 06:04:22.318068');
INSERT INTO digest VALUES(2,2,'2026-11-02','sent',NULL,'2026-11-17 06:04:22.169697','2026-11-24 06:04:22.169697','<digest.20261102.2@localhost>',1,'vm:30800','2026-11-24 06:04:22.246463','2026-11-24 06:04:22.204601','2026-11-24 06:04:22.318068');
INSERT INTO digest VALUES(3,3,'2026-11-02','sent',NULL,'2026-11-17 06:04:22.169697','2026-11-24 06:04:22.169697','<digest.20261102.3@localhost>',1,'vm:30800','2026-11-24 06:04:22.246463','2026-11-24 06:04:22.204601','2026-11-24 06:04:22.318068');
INSERT INTO digest VALUES(4,4,'2026-11-02','sent',NULL,'2026-11-17 06:04:22.169697','2026-11-24 06:04:22.169697','<digest.20261102.4@localhost>',1,'vm:30800','2026-11-24 06:04:22.246463','2026-11-24 06:04:22.204601','2026-11-24 06:04:22.318068');
CREATE TABLE subscribermodel (
	subscriber_id INTEGER NOT NULL, 
	examples JSON NOT NULL, 
	positives INTEGER NOT NULL, 
	negatives INTEGER NOT NULL, 
	evidence_until DATETIME, 
	trained_at DATETIME NOT NULL, 
	PRIMARY KEY (subscriber_id), 
	FOREIGN KEY(subscriber_id) REFERENCES subscriber (id)
);
INSERT INTO subscribermodel VALUES(1,'[[7, -0.15], [14, -1.0], [1, 1.0]]',1,1,'2026-11-02 09:30:00.000000','2026-11-24 06:04:24.876400');
CREATE TABLE digestitem (
	id INTEGER NOT NULL, 
	digest_id INTEGER NOT NULL, 
	paper_id INTEGER NOT NULL, 
	rank INTEGER NOT NULL, 
	score FLOAT NOT NULL, 
	reason VARCHAR NOT NULL, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_item_digest_rank UNIQUE (digest_id, rank), 
	CONSTRAINT uq_item_digest_paper UNIQUE (digest_id, paper_id), 
	FOREIGN KEY(digest_id) REFERENCES digest (id), 
	FOREIGN KEY(paper_id) REFERENCES paper (id)
);
INSERT INTO digestitem VALUES(1,1,1,1,1.2748183012008666992,'matches speculative decoding; by Nadia Ferreira (followed); in cs.CL');
INSERT INTO digestitem VALUES(2,1,14,2,0.86236244440078735351,'matches retrieval-augmented generation; in cs.CL');
INSERT INTO digestitem VALUES(3,1,7,3,0.10570564866065979003,'matches retrieval-augmented generation; in cs.CL');
INSERT INTO digestitem VALUES(4,2,4,1,7.0499024391174316406,'matches sim-to-real transfer, reinforcement learning; in cs.RO');
INSERT INTO digestitem VALUES(5,2,12,2,4.3662471771240234375,'matches legged locomotion, reinforcement learning; in cs.RO');
INSERT INTO digestitem VALUES(6,3,5,1,4.8411631584167480468,'matches protein structure prediction; in q-bio.BM');
INSERT INTO digestitem VALUES(7,3,13,2,4.5523428916931152343,'matches single-cell transcriptomics; by Lucía Benavides (followed); in q-bio.GN');
INSERT INTO digestitem VALUES(8,4,6,1,3.6232001781463623046,'matches weather forecasting; in physics.ao-ph');
INSERT INTO digestitem VALUES(9,4,2,2,1.8587498664855957031,'matches quantum error correction');
INSERT INTO digestitem VALUES(10,4,10,3,1.6365559101104736328,'matches quantum error correction');
CREATE TABLE feedbackevent (
	id INTEGER NOT NULL, 
	subscriber_id INTEGER NOT NULL, 
	digest_id INTEGER, 
	digest_item_id INTEGER, 
	paper_id INTEGER, 
	kind VARCHAR(16) NOT NULL, 
	repeat BOOLEAN NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(subscriber_id) REFERENCES subscriber (id), 
	FOREIGN KEY(digest_id) REFERENCES digest (id), 
	FOREIGN KEY(digest_item_id) REFERENCES digestitem (id), 
	FOREIGN KEY(paper_id) REFERENCES paper (id)
);
INSERT INTO feedbackevent VALUES(1,1,1,1,1,'click',0,'2026-11-02 09:30:00.000000');
INSERT INTO feedbackevent VALUES(2,1,1,2,14,'down',0,'2026-11-02 09:30:00.000000');
INSERT INTO feedbackevent VALUES(3,1,1,NULL,NULL,'view',0,'2026-11-02 09:30:00.000000');
CREATE INDEX ix_paper_title_key ON paper (title_key);
CREATE INDEX ix_paper_first_seen ON paper (first_seen);
CREATE UNIQUE INDEX ix_paper_arxiv_id ON paper (arxiv_id);
CREATE UNIQUE INDEX ix_subscriber_email ON subscriber (email);
CREATE INDEX ix_ingestrun_started_at ON ingestrun (started_at);
CREATE INDEX ix_ingestrun_source ON ingestrun (source);
CREATE INDEX ix_digest_status ON digest (status);
CREATE INDEX ix_digest_subscriber_id ON digest (subscriber_id);
CREATE INDEX ix_digestitem_paper_id ON digestitem (paper_id);
CREATE INDEX ix_digestitem_digest_id ON digestitem (digest_id);
CREATE INDEX ix_feedbackevent_created_at ON feedbackevent (created_at);
CREATE INDEX ix_feedback_subscriber_kind ON feedbackevent (subscriber_id, kind);
CREATE INDEX ix_feedbackevent_digest_item_id ON feedbackevent (digest_item_id);
COMMIT;
