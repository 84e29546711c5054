"""The pose half of PoseAnimate; needs numpy, opencv and onnxruntime (DensePose also torch), not ComfyUI.

Modules (nothing runs when they are imported; onnxruntime loads on the first session):

* ``keypoints``: Person / PoseFrame, COCO-WholeBody -> OpenPose, POSE_KEYPOINT in and out
* ``dwpose``: DWPose (YOLOX + RTMPose whole-body) on onnxruntime
* ``densepose``: DensePose control images for MagicAnimate (TorchScript model, torch imported when used)
* ``render``: pose images in the ``moore`` and ``musepose`` styles
* ``retarget``: driving sequence -> character proportions
* ``smooth``: one-euro / Savitzky-Golay smoothing of keypoint tracks
* ``standin``: tiny ONNX models with the real files' interfaces (tests, benchmarks)
"""
