"""Write the corpus of broken inputs used by `tests/test_check_corpus.py` (see README.md for the cases).

Run `python tests/corpus/make_corpus.py` from the repository root; the output is deterministic, and the
generated files are committed so that the tests never depend on this script.
"""
import json, shutil, struct, zlib
from pathlib import Path
import numpy as np
from PIL import Image

HERE = Path(__file__).parent
VOC, COCO, YOLO, YOLO_NO_LABELS = HERE/'voc', HERE/'coco', HERE/'yolo', HERE/'yolo_nolabels'
W, H = 32, 24                          # every image is 32 wide and 24 high (non-square, so a rotation shows in the size)
CLASSES = ['circle', 'square']
EXIF_ORIENTATION = 0x0112

def picture(seed=0) -> np.ndarray:
    "A small RGB picture with smooth content (compresses to a few hundred bytes)."
    y, x = np.mgrid[:H, :W]
    rgb = np.stack([x * 8, y * 10, (x + y + 20 * seed) % 256], -1)
    rgb[4:12, 4:14] = 255
    return rgb.astype(np.uint8)

def save_jpeg(path, rgb, **kw): Image.fromarray(rgb).save(path, 'JPEG', quality=90, **kw)

def png_header(width, height) -> bytes:
    "A PNG of a few bytes whose IHDR claims `width x height` RGB pixels (a decompression bomb for PIL): no pixel data."
    chunk = lambda kind, data: struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0))
            + chunk(b'IDAT', zlib.compress(b'')) + chunk(b'IEND', b''))

def voc_xml(name, objects, size=(H, W), filename=None) -> str:
    "A Pascal VOC annotation; `objects` are (class, xmin, ymin, xmax, ymax) and `size` (height, width), values written as given."
    size_xml = '' if size is None else f"<size><width>{size[1]}</width><height>{size[0]}</height><depth>3</depth></size>"
    objs = ''.join(f"<object><name>{c}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>"
                   f"<bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
                   for c, x1, y1, x2, y2 in objects)
    return (f"<annotation><folder>JPEGImages</folder><filename>{filename or name + '.jpg'}</filename>"
            f"{size_xml}<segmented>0</segmented>{objs}</annotation>\n")

GOOD = [('circle', 5, 5, 14, 12), ('square', 18, 8, 30, 20)]

def write_images(img_dir):
    "One image file per case (the `missing` case has none)."
    rgb = picture()
    for name in ['clean', 'no_size', 'size_mismatch', 'outside', 'inverted', 'degenerate', 'unknown_class',
                 'negative', 'bad_box', 'bad_xml', 'inf_width', 'duplicate_object', 'tiny']:
        save_jpeg(img_dir/f'{name}.jpg', rgb)
    buf = img_dir/'full.tmp'; save_jpeg(buf, picture(1))
    data = buf.read_bytes(); buf.unlink()
    scan = data.index(b'\xff\xda')                  # start of the compressed pixels: keep the header whole
    (img_dir/'truncated.jpg').write_bytes(data[:scan + (len(data) - scan) // 2])
    (img_dir/'empty.jpg').write_bytes(b'')
    Image.fromarray(rgb).save(img_dir/'wrong_ext.jpg', 'PNG')                       # PNG bytes, .jpg name
    save_jpeg(img_dir/'grayscale.jpg', rgb[..., 0])
    Image.fromarray(np.dstack([rgb, np.full((H, W), 255, np.uint8)])).save(img_dir/'rgba.png')
    Image.fromarray(rgb[..., 1].astype(np.uint16) * 257).save(img_dir/'gray16.png')  # mode I;16
    Image.fromarray(rgb).convert('P', palette=Image.Palette.ADAPTIVE, colors=16).save(img_dir/'palette.png')
    # stored 32x24, displayed 24x32: orientation 6 means "rotate 90 degrees clockwise to display"
    exif = Image.Exif(); exif[EXIF_ORIENTATION] = 6
    save_jpeg(img_dir/'exif_rotated.jpg', rgb, exif=exif)
    save_jpeg(img_dir/'exif_raw_frame.jpg', rgb, exif=exif)

# VOC counts pixels from 1, last one included: the white patch `picture()[4:12, 4:14]` is the box (5, 5, 14, 12).
# In the EXIF images it is that box of the stored pixels; orientation 6 shows stored pixel (col, row) at (H-1-row, col),
# so as displayed the patch covers columns 12..19 and rows 4..13: the VOC box (13, 5, 20, 14).
EXIF_RAW = [('circle', 5, 5, 14, 12)]
EXIF_DISPLAYED = [('circle', 13, 5, 20, 14)]

CASES = {  # case -> (objects, size written in the XML, image file name)
    'clean': (GOOD, (H, W), None),
    'truncated': (GOOD, (H, W), None),
    'empty': (GOOD, (H, W), None),
    'missing': (GOOD, (H, W), None),
    'wrong_ext': (GOOD, (H, W), None),
    'no_size': (GOOD, None, None),
    'size_mismatch': (GOOD, (2 * H, 2 * W), None),
    'outside': ([('circle', 5, 5, 14, 12), ('square', 20, 10, 40, 30), ('square', 40, 2, 50, 9)], (H, W), None),
    'inverted': ([('circle', 5, 5, 14, 12), ('square', 30, 8, 18, 20)], (H, W), None),
    'degenerate': ([('circle', 5, 5, 14, 12), ('square', 18, 8, 18, 20)], (H, W), None),
    'unknown_class': ([('circle', 5, 5, 14, 12), ('triangle', 18, 8, 30, 20)], (H, W), None),
    'grayscale': (GOOD, (H, W), None),
    'rgba': (GOOD, (H, W), 'rgba.png'),
    'gray16': (GOOD, (H, W), 'gray16.png'),
    'palette': (GOOD, (H, W), 'palette.png'),
    'exif_rotated': (EXIF_DISPLAYED, (W, H), None),
    'exif_raw_frame': (EXIF_RAW, (H, W), None),
    'negative': ([], (H, W), None),
    'inf_width': (GOOD, (H, 'inf'), None),
    'duplicate_object': (GOOD + GOOD[:1], (H, W), None),
    'tiny': ([('circle', 5, 5, 14, 12), ('square', 18, 8, 19, 9)], (H, W), None),   # a 2 x 2 pixel square: clean
}

def write_voc():
    "The Pascal VOC folder: one XML per case, one with an unusable box, one that is not XML, and one id without XML."
    if VOC.exists(): shutil.rmtree(VOC)
    for d in ['Annotations', 'JPEGImages', 'ImageSets/Main']: (VOC/d).mkdir(parents=True)
    write_images(VOC/'JPEGImages')
    for name, (objects, size, filename) in CASES.items():
        (VOC/'Annotations'/f'{name}.xml').write_text(voc_xml(name, objects, size, filename))
    bad_box = voc_xml('bad_box', GOOD).replace('<xmin>18</xmin>', '<xmin>eighteen</xmin>')
    (VOC/'Annotations'/'bad_box.xml').write_text(bad_box)
    (VOC/'Annotations'/'bad_xml.xml').write_text(voc_xml('bad_xml', GOOD)[:150])   # cut off mid-element
    # `no_xml` is listed but has no XML
    (VOC/'ImageSets'/'Main'/'trainval.txt').write_text(''.join(f'{n}\n' for n in [*CASES, 'bad_box', 'bad_xml', 'no_xml']))

def write_coco():
    "A COCO file for what VOC cannot express: repeated ids, one file listed twice, an unknown category id, values JSON allows but COCO does not."
    if COCO.exists(): shutil.rmtree(COCO)
    (COCO/'images').mkdir(parents=True)
    for seed, name in enumerate(['a', 'b', 'c', 'd', 'e']): save_jpeg(COCO/'images'/f'{name}.jpg', picture(seed))
    images = [dict(id=1, file_name='a.jpg', height=H, width=W),
              dict(id=2, file_name='b.jpg', height=H, width=W),
              dict(id=2, file_name='c.jpg', height=H, width=W),     # image id 2 again
              dict(id=3, file_name='a.jpg', height=H, width=W),     # a.jpg again
              dict(id=4, file_name='d.jpg', height=H, width=W),
              dict(id=5, file_name='e.jpg', height=H, width=float('inf')),   # written as Infinity
              dict(id=[6], file_name='b.jpg', height=H, width=W),   # an id that cannot link annotations
              dict(id=7, file_name=None, height=H, width=W)]        # no file name
    annotations = [dict(id=1, image_id=1, category_id=1, bbox=[5, 5, 9, 7], iscrowd=0, area=63),
                   dict(id=2, image_id=1, category_id=2, bbox=[18, 8, 12, 12], iscrowd=0, area=144),
                   dict(id=3, image_id=3, category_id=1, bbox=[5, 5, 9, 7], iscrowd=0, area=63),
                   dict(id=2, image_id=4, category_id=1, bbox=[5, 5, 9, 7], iscrowd=0, area=63),     # annotation id 2 again
                   dict(id=5, image_id=4, category_id=7, bbox=[18, 8, 12, 12], iscrowd=0, area=144),  # no category 7
                   dict(id=6, image_id=5, category_id=1, bbox=[5, 5, 9, 7], iscrowd=0, area=63),
                   dict(id=7, image_id=1, category_id=[1], bbox=[5, 5, 9, 7], iscrowd=0, area=63),   # a list as category id
                   dict(id=8, image_id=7, category_id=2, bbox=[18, 8, 12, 12], iscrowd=0, area=144)]  # its image entry is unreadable
    categories = [dict(id=i + 1, name=c) for i, c in enumerate(CLASSES)]
    (COCO/'annotations.json').write_text(json.dumps(dict(images=images, annotations=annotations, categories=categories), indent=1) + '\n')

# YOLO lines of the two VOC objects: the pixel edges (4, 4, 14, 12) and (17, 7, 30, 20) as normalised centre and size
YOLO_GOOD = ['0 0.28125 0.333333 0.3125 0.333333', '1 0.734375 0.5625 0.40625 0.541667']
YOLO_CASES = {  # case -> label file lines (None: no label file), image file name
    'clean': (YOLO_GOOD, 'clean.jpg'),
    'inf_line': (YOLO_GOOD[:1] + ['inf 0.5 0.5 0.1 0.1'], 'inf_line.jpg'),
    'unknown_class': (YOLO_GOOD[:1] + ['5 0.5 0.5 0.1 0.1'], 'unknown_class.jpg'),
    'negative': ([], 'negative.jpg'),
    'missing_label': (None, 'missing_label.jpg'),
    'bomb': (YOLO_GOOD, 'bomb.png'),
}

def write_yolo():
    "An Ultralytics folder (images/, labels/) with one image per case, a label file that is not UTF-8, and a folder with no label files."
    for d in [YOLO, YOLO_NO_LABELS]:
        if d.exists(): shutil.rmtree(d)
    for d in [YOLO/'images', YOLO/'labels', YOLO_NO_LABELS/'images']: d.mkdir(parents=True)
    for name, (lines, image) in YOLO_CASES.items():
        if image.endswith('.jpg'): save_jpeg(YOLO/'images'/image, picture())
        if lines is not None: (YOLO/'labels'/f'{name}.txt').write_text(''.join(f'{line}\n' for line in lines))
    (YOLO/'images'/'bomb.png').write_bytes(png_header(30000, 30000))
    save_jpeg(YOLO/'images'/'non_utf8.jpg', picture())
    (YOLO/'labels'/'non_utf8.txt').write_bytes(f'{YOLO_GOOD[0]}\n'.encode() + b'1 0.7\xff 0.5 0.4 0.5\n')
    save_jpeg(YOLO_NO_LABELS/'images'/'a.jpg', picture())

if __name__ == '__main__':
    write_voc(); write_coco(); write_yolo()
    print(f'wrote {sum(1 for p in HERE.rglob("*") if p.is_file())} files under {HERE}')
