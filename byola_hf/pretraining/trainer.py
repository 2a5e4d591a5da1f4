"""`Trainer` for BYOL-A pre-training: crops per epoch in, the log-mel on the training device, the EMA after each
optimizer step, clips per second in the logs."""

import logging
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import Trainer, TrainerCallback, set_seed
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..feature_extraction_byola import BYOLAFeatureExtractor
from ..tools.cli import random_state_kept
from ..tools.outputs import atomic_path
from .data import EpochCropSampler, collate_waveforms, crop_dataset
from .linear_probe import LinearProbeData, linear_probe_metrics
from .modeling_pretraining import BYOLAForPreTraining


logger = logging.getLogger(__name__)
RANK_STATE_FILE = "rank_state_{}.safetensors"


class EMATargetCallback(TrainerCallback):
    """Runs [`BYOLAForPreTraining.update_target`] after every optimizer step, as the original does before zeroing
    the gradients."""

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        model.update_target()


class CropEpochCallback(TrainerCallback):
    """Gives [`EpochCropSampler`] each epoch's number as the epoch begins. Trainer's `set_epoch` does not reach it
    under DDP after a resume inside an epoch (accelerate's skipping and sharding wrappers hide it), and the rest of
    that epoch repeated epoch 0's clips and crops. Trainer's epoch count stays below the next whole number until the
    epoch's last step, so its integer part is the epoch's number, a resumed one's too."""

    def __init__(self, sampler: EpochCropSampler):
        self.sampler = sampler

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.sampler.set_epoch(int(state.epoch))


class RankStateCallback(TrainerCallback):
    """Under DDP every rank keeps its own BatchNorm running statistics and mixup memory bank, as the original's DDP,
    while Trainer's checkpoint holds rank 0's model. This saves each rank's buffers beside it
    (`checkpoint-N/rank_state_{rank}.safetensors`) and, when the run resumes from `resume_from`, puts each rank's own
    back after Trainer has loaded the checkpoint, so a resumed run continues every rank as it was."""

    def __init__(self, resume_from: str | None = None):
        self.resume_from = resume_from

    def on_save(self, args, state, control, model=None, **kwargs):
        if args.world_size <= 1:
            return
        folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        buffers = {name: buffer.detach().cpu().contiguous() for name, buffer in model.named_buffers()}
        with atomic_path(folder / RANK_STATE_FILE.format(args.process_index)) as staged:
            save_file(buffers, staged)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.resume_from is None or args.world_size <= 1:
            return
        path = Path(self.resume_from) / RANK_STATE_FILE.format(args.process_index)
        if not path.is_file():  # the resumed checkpoint is chosen with every rank's file: this one was given
            raise ValueError(f"{path} is missing: {self.resume_from} was saved by fewer ranks; resume it as it ran.")
        own, saved = dict(model.named_buffers()), load_file(path)
        if saved.keys() != own.keys():
            raise ValueError(f"{path} does not hold this learner's buffers; pass a new --output_dir.")
        for name, value in saved.items():
            own[name].copy_(value)


class BYOLAPreTrainer(Trainer):
    """[`~transformers.Trainer`] over a [`~byola_hf.pretraining.data.CropDataset`]: batches of waveform crops
    (`input_values`) become log-mels on the model's device ([`~byola_hf.BYOLAFeatureExtractor.log_mel`]), then the
    model makes the views and the loss. Give it `feature_extractor=`; the EMA callback is added here. With
    `linear_probe=` (and an `eval_strategy`), each evaluation is a linear evaluation of the current online encoder on
    that task, logged as `eval_linear_accuracy`, with the effective rank of the test clips' embeddings
    (`eval_effective_rank`)."""

    def __init__(
        self, *args, feature_extractor: BYOLAFeatureExtractor, linear_probe: LinearProbeData | None = None, **kwargs
    ):
        super().__init__(*args, **kwargs)
        self.feature_extractor = feature_extractor
        self.linear_probe = linear_probe
        self.add_callback(EMATargetCallback())
        streaming = isinstance(self.train_dataset, torch.utils.data.IterableDataset)
        indexed = self.train_dataset is not None and not streaming
        self.crop_sampler = EpochCropSampler(len(self.train_dataset), self.args.seed) if indexed else None
        if self.crop_sampler is not None:
            self.add_callback(CropEpochCallback(self.crop_sampler))
        self.log_clock: tuple[float, int] | None = None  # (time, global step) of the previous loss log

    def get_train_dataloader(self) -> torch.utils.data.DataLoader:
        """Batches of `per_device_train_batch_size` crops decoded in `dataloader_num_workers` workers, each epoch's
        last partial batch dropped: BatchNorm fails on one example and a smaller batch is not the batch asked for. A
        dataset is read in [`EpochCropSampler`]'s order, a stream
        ([`~byola_hf.pretraining.data.StreamingCropDataset`]) as it arrives, endlessly (no batch is partial)."""
        args = self.args
        workers = args.dataloader_num_workers
        loader = torch.utils.data.DataLoader(
            self.train_dataset,
            batch_size=args.per_device_train_batch_size,
            sampler=self.crop_sampler,
            collate_fn=self.data_collator,
            num_workers=workers,
            pin_memory=args.dataloader_pin_memory and torch.cuda.is_available(),
            persistent_workers=args.dataloader_persistent_workers and workers > 0,
            prefetch_factor=args.dataloader_prefetch_factor if workers > 0 else None,
            multiprocessing_context=args.dataloader_multiprocessing_context if workers > 0 else None,
            drop_last=True,
        )
        return self.accelerator.prepare(loader)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.log_clock is None:
            self.log_clock = (time.perf_counter(), self.state.global_step)
        log_mel = self.feature_extractor.log_mel(inputs["input_values"])
        outputs = model(input_features=log_mel)
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def training_step(self, *args, **kwargs) -> torch.Tensor:
        """Trainer's step (forward, backward), refusing a non-finite loss before the optimizer uses its gradients.
        Trainer would log the running mean in its place (`logging_nan_inf_filter`) and train on, to fail only when
        the encoder is saved. Checked after the backward pass, where Trainer's filter reads the loss anyway, so the
        device is not made to wait between forward and backward."""
        loss = super().training_step(*args, **kwargs)
        if not torch.isfinite(loss):
            raise ValueError(
                f"Pre-training diverged at step {self.state.global_step + 1}: the loss is {loss.item()}. "
                "Lower --learning_rate, or check --mean/--std and the audio."
            )
        return loss

    def evaluate(self, *args, **kwargs) -> dict[str, float]:
        """The linear evaluation of the current encoder (rank 0 only; the other ranks return no metrics)."""
        metrics = {}
        if self.linear_probe is not None and self.is_world_process_zero():
            # A copy in eval mode with the pre-training statistics, on the training device: the other ranks wait
            # for rank 0 in their next step, within --ddp_timeout. Built and probed with torch's generators kept
            # (building the copy draws initial weights), so how often a run evaluates leaves its training alone.
            with random_state_kept(self.args.device):
                encoder = self.model.encoder_model().to(self.args.device)
                probe = linear_probe_metrics(encoder, self.feature_extractor, self.linear_probe, [self.args.seed])
            # The effective rank shows dimensional collapse, which the accuracy on a small task may not.
            metrics = {"eval_linear_accuracy": probe.accuracies[0], "eval_effective_rank": probe.effective_rank}
            self.log(metrics)
        # As Trainer.evaluate: callbacks see the metrics and the request is cleared (left set, Trainer evaluated
        # again at the end of an epoch that ended on an evaluation step).
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        """Trainer's logs, with the clips per second (all ranks) since the previous log."""
        now, step = time.perf_counter(), self.state.global_step
        if "loss" in logs and self.log_clock is not None and step > self.log_clock[1]:
            clips = (step - self.log_clock[1]) * self.args.train_batch_size * self.args.gradient_accumulation_steps
            logs["clips_per_second"] = round(clips * self.args.world_size / (now - self.log_clock[0]), 2)
            self.log_clock = (now, step)
        super().log(logs, *args, **kwargs)


def build_trainer(
    config, start_encoder, dataset, data_args, training_args, feature_extractor, linear_probe, callbacks
) -> BYOLAPreTrainer:
    """A new learner (seeded; from `start_encoder` when given) in a [`BYOLAPreTrainer`] over crops of `dataset`."""
    set_seed(training_args.seed)
    model = BYOLAForPreTraining(config)
    if start_encoder is not None:
        model.load_encoder(start_encoder)
    return BYOLAPreTrainer(
        model=model,
        args=training_args,
        train_dataset=crop_dataset(dataset, data_args, config, training_args.seed),
        data_collator=collate_waveforms,
        feature_extractor=feature_extractor,
        # Trainer asks for an evaluation set under an eval_strategy; BYOLAPreTrainer.evaluate is the linear probe.
        eval_dataset=linear_probe.test.waveforms if linear_probe is not None else None,
        linear_probe=linear_probe,
        callbacks=callbacks,
    )
