"""The pose half of PoseAnimate; needs numpy, opencv and onnxruntime, not torch or ComfyUI.

Modules (nothing runs when they are imported; onnxruntime loads on the first session):

* ``keypoints``: Person / PoseFrame, COCO-WholeBody -> OpenPose, POSE_KEYPOINT in and out
* ``dwpose``: DWPose (YOLOX + RTMPose whole-body) on onnxruntime
* ``render``: pose images in the ``moore`` and ``musepose`` styles
* ``retarget``: driving sequence -> character proportions
* ``smooth``: one-euro / Savitzky-Golay smoothing of keypoint tracks
* ``standin``: tiny ONNX models with the real files' interfaces (tests, benchmarks)
"""
